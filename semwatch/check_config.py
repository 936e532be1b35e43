"""``semwatch check-config``: load the config directory as a worker would, print a summary, exit 0/2."""

from __future__ import annotations

from semwatch.config import load_config
from semwatch.settings import load_settings


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="config directory (default: SEMWATCH_CONFIG_DIR or ./config)")


def run(args) -> int:
    settings = load_settings(**({"config_dir": args.config} if args.config else {}))
    config = load_config(settings.config_dir)
    print(f"{config.directory}: OK")
    for p in config.detector_params:
        state = "" if p.enabled else " (disabled)"
        print(f"  {p.type:<22} {p.name}{state}  group_by={list(p.group_by)}")
    return 0
