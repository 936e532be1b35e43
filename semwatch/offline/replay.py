"""Offline replay: recorded events (JSON Lines) through the very same engine, in event time.

Deterministic: the same file and config give byte-identical incidents. Lines that are not valid
events are reported with line number and reason (never fatal, never silent).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional

from pydantic import ValidationError

from semwatch.config import SemwatchConfig, load_config
from semwatch.contract import Incident, RunEvent, describe_validation_error


@dataclass
class ReplayResult:
    incidents: list[Incident] = field(default_factory=list)
    events: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    late: int = 0
    first_ts: Optional[float] = None
    last_ts: Optional[float] = None


def read_events(lines: Iterable[str | bytes], rejected: list[tuple[int, str]]) -> Iterator[RunEvent]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield RunEvent.model_validate_json(line)
        except ValidationError as exc:
            reason = "invalid_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "schema"
            rejected.append((lineno, f"{reason}: {describe_validation_error(exc)}"))


def replay_events(events: Iterable[RunEvent], config: SemwatchConfig,
                  result: Optional[ReplayResult] = None) -> ReplayResult:
    result = result or ReplayResult()
    engine = config.build_engine()
    for event in events:
        result.events += 1
        if result.first_ts is None or event.ts < result.first_ts:
            result.first_ts = event.ts
        if result.last_ts is None or event.ts > result.last_ts:
            result.last_ts = event.ts
        result.incidents.extend(engine.process(event))
    if result.last_ts is not None:
        # Close every window: the recording ended, so event time moves past the last event.
        result.incidents.extend(engine.advance_to(result.last_ts + config.engine.allowed_lateness_s + 3600))
    result.late = engine.stats.late
    return result


def replay_file(path: str | Path, config: SemwatchConfig) -> ReplayResult:
    result = ReplayResult()
    opener = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    with opener as fh:
        replay_events(read_events(fh, result.rejected), config, result)
    return result


def write_incidents(incidents: Iterable[Incident], out: IO[str]) -> None:
    for inc in incidents:
        out.write(inc.to_json())
        out.write("\n")


def add_arguments(parser) -> None:
    parser.add_argument("events", help="events as JSON Lines ('-' for stdin)")
    parser.add_argument("--out", default="-", help="incidents JSON Lines (default: stdout)")
    parser.add_argument("--config", default=None, help="config directory (default: settings config_dir)")


def run(args) -> int:
    from semwatch.settings import load_settings

    config = load_config(args.config or load_settings().config_dir)
    result = replay_file(args.events, config)
    if args.out == "-":
        write_incidents(result.incidents, sys.stdout)
    else:
        with open(args.out, "w", encoding="utf-8") as fh:
            write_incidents(result.incidents, fh)
    triggers = sum(1 for i in result.incidents if i.event_action == "trigger")
    print(json.dumps({"events": result.events, "rejected": len(result.rejected), "late": result.late,
                      "triggers": triggers, "resolves": len(result.incidents) - triggers}),
          file=sys.stderr)
    for lineno, reason in result.rejected[:20]:
        print(f"{args.events}:{lineno}: rejected: {reason}", file=sys.stderr)
    return 0
