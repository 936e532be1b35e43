"""Replay speed on one core: end to end, by stage, and per detector (what one tune candidate costs).

    .venv/bin/python bench/bench_replay.py                   # 1 simulated day, seed 7, default config
    .venv/bin/python bench/bench_replay.py --events E.jsonl  # a recording of your own
    .venv/bin/python bench/bench_replay.py --duration 2d --limit 300000

Rows:

- end to end: ``semwatch replay``'s path (JSON Lines -> pydantic -> refusal classifier and prices ->
  every enabled detector and rule), events/s of wall time;
- stages: parsing alone, enrichment alone (the classifier on events without ``refusal``), the
  engine alone on parsed and enriched events, and the engine with no detectors (bookkeeping);
- per detector: the engine with that detector alone, on the parsed, enriched events — exactly what
  ``semwatch tune`` replays for each candidate setting (it parses and enriches once).

The target in the issue is 100k events/s end to end; the rows show where the time goes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semwatch.config import load_config  # noqa: E402
from semwatch.contract import RunEvent  # noqa: E402
from semwatch.offline.replay import replay_events, replay_file  # noqa: E402
from semwatch.offline.tune import enrich  # noqa: E402
from semwatch.simulator.generate import generate, parse_duration, parse_time  # noqa: E402


def recording(args) -> Path:
    if args.events:
        return Path(args.events)
    path = Path(tempfile.gettempdir()) / f"semwatch-bench-replay-{args.seed}-{args.duration}.jsonl"
    if not path.exists():
        import json

        events, _ = generate(args.seed, parse_time("2026-01-05T00:00:00Z"), parse_duration(args.duration))
        with open(path, "w", encoding="utf-8") as fh:
            for ev in events:
                fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", help="JSON Lines recording (default: generated)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", default="1d")
    ap.add_argument("--limit", type=int, default=200_000, help="events used for the stage rows")
    ap.add_argument("--config", default=str(ROOT / "config"))
    args = ap.parse_args()
    path = recording(args)
    config = load_config(args.config)
    load = os.getloadavg()
    print(f"semwatch replay bench: {path} ; load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")

    t = time.perf_counter()
    result = replay_file(path, config)
    total = time.perf_counter() - t
    print(f"end to end  {result.events:>9,} events  {result.events / total:>10,.0f} events/s "
          f"({total / result.events * 1e6:.0f} us/event; target 100,000 events/s)")

    with open(path, "rb") as fh:
        lines = list(itertools.islice(fh, args.limit))
    t = time.perf_counter()
    events = [RunEvent.model_validate_json(line) for line in lines]
    parse = time.perf_counter() - t
    n = len(events)
    verdicts = sum(1 for ev in events if ev.refusal is None and ev.response_text)
    t = time.perf_counter()
    events = enrich(events, config)  # what tune does once: refusal verdicts and prices
    enriched = time.perf_counter() - t

    def engine_alone(params) -> float:
        """The engine over the parsed, enriched events with these detectors (as tune replays)."""
        started = time.perf_counter()
        replay_events(events, config.with_params(params))
        return time.perf_counter() - started

    enabled = [p for p in config.detector_params if p.enabled]
    full = engine_alone(enabled)
    bare = engine_alone([])
    rows = [("parse (pydantic, from JSON)", parse),
            (f"enrich ({verdicts:,} refusal verdicts, prices; with bookkeeping)", enriched),
            ("engine, every detector", full), ("engine, no detector (bookkeeping)", bare)]
    print(f"\nstages, {n:,} events")
    for name, secs in rows:
        print(f"  {name:<62} {n / secs:>10,.0f} events/s  {secs / n * 1e6:6.1f} us/event")
    print("\nper detector alone (a tune candidate's replay: parsed and enriched once)")
    for params in enabled:
        secs = engine_alone([params])
        print(f"  {params.name:<24} {n / secs:>10,.0f} events/s  {max(secs - bare, 0) / n * 1e6:6.1f} us/event "
              f"of its own")


if __name__ == "__main__":
    main()
