"""``semwatch generate``: synthetic labelled traffic (see :mod:`semwatch.simulator` for what it looks like).

>>> events, labels = generate(seed=1, start=1767571200.0, duration_s=600, rate=2.0)
>>> first = next(events)
>>> first["schema_version"], first["ts"][:10]
('1', '2026-01-05')
>>> labels  # no incidents in the first 3 hours
[]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

from semwatch.simulator.clock import format_ts, parse_duration, parse_time
from semwatch.simulator.simulation import Simulation
from semwatch.simulator.world import PRICES

__all__ = [
    "PRICES",
    "generate",
    "add_arguments",
    "run",
    "parse_duration",
    "parse_time",
    "format_ts",
]

#: Fraction of events that carry an explicit ``refusal`` field (the producer knows). Tests may
#: raise it to 1.0 to read the ground truth; the random stream does not depend on it.
REFUSAL_FIELD_FRACTION = 0.20
#: Fraction of events that carry ``cost_usd`` (the rest leave it to semwatch's price config).
COST_FIELD_FRACTION = 0.70


def generate(seed: int, start: float, duration_s: float, rate: float = 3.0,
             incidents: bool = True) -> tuple[Iterator[dict], list[dict]]:
    """Synthetic labelled traffic.

    Returns ``(events, labels)``: ``events`` is an iterator of JSON-ready event dicts sorted by
    ``ts`` (RFC 3339 UTC with milliseconds), streamed with bounded memory; ``labels`` is the list of
    labelled incident windows ``{"kind", "start", "end", "segment", "note", ["run_id"]}``.
    ``rate`` is the mean events/s over a weekday (weekends are lower, per app).
    Deterministic for a given ``seed`` (and start/duration/rate/incidents).
    """
    if isinstance(start, str):
        start = parse_time(start)
    sim = Simulation(seed, start, duration_s, rate, incidents, refusal_field_fraction=REFUSAL_FIELD_FRACTION,
                     cost_field_fraction=COST_FIELD_FRACTION)
    return sim.events(), [dict(label) for label in sim.labels]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--start", default="2026-01-05T00:00:00Z",
                        help="simulated start time, RFC 3339 or epoch seconds (default 2026-01-05T00:00:00Z)")
    parser.add_argument("--duration", default="1d", help="simulated span: 90s, 30m, 6h, 1d, 2d (default 1d)")
    parser.add_argument("--rate", type=float, default=3.0, help="mean events/s over a weekday (default 3)")
    parser.add_argument("--out", default="-", help="events JSONL path, '-' for stdout (default -)")
    parser.add_argument("--labels", default=None, help="labelled windows JSONL path")
    parser.add_argument("--no-incidents", dest="incidents", action="store_false",
                        help="no scripted incidents (benign churn only)")
    parser.add_argument("--kafka", action="store_true", help="produce events to Kafka instead of --out")
    parser.add_argument("--rate-limit", dest="rate_limit", type=float, default=None, metavar="EVENTS_PER_S",
                        help="wall-clock pacing when producing (events/s)")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def run(args: argparse.Namespace) -> int:
    try:
        start = parse_time(args.start)
        duration = parse_duration(args.duration)
    except ValueError as exc:
        print(f"semwatch generate: {exc}", file=sys.stderr)
        return 2
    if duration <= 0 or args.rate <= 0:
        print("semwatch generate: --duration and --rate must be > 0", file=sys.stderr)
        return 2
    events, labels = generate(args.seed, start, duration, rate=args.rate,
                              incidents=getattr(args, "incidents", True))
    if getattr(args, "labels", None):
        with open(args.labels, "w", encoding="utf-8") as f:
            for lab in labels:
                f.write(_dumps(lab) + "\n")
    if getattr(args, "kafka", False):
        from semwatch.simulator.kafka_out import produce_events  # lazy: needs Kafka client libraries

        return int(produce_events(args, events) or 0)
    out_path = getattr(args, "out", "-") or "-"
    try:
        if out_path == "-":
            n = _write_jsonl(sys.stdout, events)
        else:
            with open(out_path, "w", encoding="utf-8") as f:
                n = _write_jsonl(f, events)
    except BrokenPipeError:
        return 0
    print(f"semwatch generate: {n} events, {len(labels)} labels", file=sys.stderr)
    return 0


def _write_jsonl(f, events: Iterator[dict]) -> int:
    """Write one JSON object a line, in batches; returns how many."""
    n = 0
    batch: list[str] = []
    for ev in events:
        batch.append(_dumps(ev))
        n += 1
        if len(batch) >= 2000:
            f.write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        f.write("\n".join(batch) + "\n")
    f.flush()
    return n


def main(argv: list[str] | None = None) -> int:  # convenience: python -m semwatch.simulator.generate
    p = argparse.ArgumentParser(prog="semwatch generate", description="synthetic labelled traffic")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
