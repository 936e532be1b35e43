"""The ``semwatch`` command line. Each subcommand lives in its own module (``add_arguments`` + ``run``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). Each module is imported by name to add its arguments; heavy imports (Faust,
# matplotlib, Kafka clients) are deferred inside its `run`, so `semwatch replay` pays for none.
COMMANDS = {
    "worker": ("streams.worker", "run a Faust worker (embedded broker when none is configured)"),
    "demo": ("semwatch.simulator.demo", "embedded broker + worker + scripted traffic, incidents shown live"),
    "generate": ("semwatch.simulator.generate", "synthetic labelled traffic to JSON Lines or Kafka"),
    "replay": ("semwatch.offline.replay", "recorded events through the same engine, offline"),
    "evaluate": ("semwatch.offline.evaluate", "incidents vs labelled windows: precision, recall, time to detect"),
    "tune": ("semwatch.offline.tune", "threshold sweep under a false-alarm budget"),
    "page": ("sinks.pager.agent", "incidents topic -> Alertmanager / PagerDuty"),
    "mark-false-alarm": ("sinks.feedback", "mark an incident as a false alarm (feedback topic, tune --feedback)"),
    "check-config": ("semwatch.check_config", "validate the config directory and exit"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="semwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                p.set_defaults(_missing=f"semwatch {name} is not available in this build")
                continue
            raise
        module.add_arguments(p)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    from semwatch.config import ConfigError
    from semwatch.settings import SettingsError

    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(args._missing, file=sys.stderr)
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except (ConfigError, SettingsError) as exc:
        print(f"semwatch {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
