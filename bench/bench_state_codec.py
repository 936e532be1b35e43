"""State changelog records: the msgpack state format against the pickle records of earlier releases.

    .venv/bin/python bench/bench_state_codec.py [--seed 1] [--duration 2h] [--rate 3] [--repeat 5]

Replays what ``semwatch generate --seed 1 --duration 2h`` produces through the default config's
engine, then takes every state entry the worker would write to its changelog at that point and
writes and reads each one on its own (as the worker does, one record per key) with:

- ``format``: semwatch/engine/state_format.py (what the worker writes and reads now);
- ``pickle``: ``pickle.dumps(value, HIGHEST_PROTOCOL)`` / ``pickle.loads`` (what earlier releases
  wrote; unrestricted, for the speed of reference only);
- ``legacy``: reading those pickle records through streams/state_codec.py (the exact-whitelist
  unpickler, then the same schema checks as a new record) — the migration path.

Bytes are totals and per-record percentiles; times are the best of ``--repeat`` passes, per record.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semwatch.config import load_config  # noqa: E402
from semwatch.contract import RunEvent  # noqa: E402
from semwatch.engine import state_format  # noqa: E402
from semwatch.engine.state import tag_of  # noqa: E402
from semwatch.simulator.generate import generate, parse_duration  # noqa: E402
from streams import state_codec  # noqa: E402


def _best(fn, items, repeat: int) -> float:
    """Seconds per item, best pass of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - started)
    return best / max(1, len(items))


def _pct(values: list[int], q: float) -> int:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", default="2h")
    ap.add_argument("--rate", type=float, default=3.0)
    ap.add_argument("--start", default="2026-01-05T00:00:00Z")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    events, _ = generate(seed=args.seed, start=args.start, duration_s=parse_duration(args.duration),
                         rate=args.rate)
    engine = load_config(REPO / "config").build_engine()
    n_events = 0
    for raw in events:
        engine.process(RunEvent.model_validate(raw))
        n_events += 1
    values = list(engine.data.values())
    new = [state_format.dumps(v) for v in values]
    old = [pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL) for v in values]
    for record in new:  # the codec measured is one that round-trips: re-written, the same bytes
        assert state_format.dumps(state_format.loads(record)) == record

    print(f"state after {n_events} events (generate --seed {args.seed} --duration {args.duration} "
          f"--rate {args.rate:g}): {len(values)} records")
    sizes_new, sizes_old = [len(b) for b in new], [len(b) for b in old]
    print(f"{'bytes':<8}{'total':>12}{'p50':>8}{'p95':>8}{'max':>8}")
    for name, sizes in (("format", sizes_new), ("pickle", sizes_old)):
        print(f"{name:<8}{sum(sizes):>12,}{_pct(sizes, 0.5):>8}{_pct(sizes, 0.95):>8}{max(sizes):>8}")
    print(f"format / pickle: {sum(sizes_new) / sum(sizes_old):.2f}")

    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for v, a, b in zip(values, sizes_new, sizes_old, strict=True):
        row = by_type[tag_of(type(v)) or "?"]
        row[0] += 1
        row[1] += a
        row[2] += b
    print(f"\n{'by state tag':<24}{'records':>9}{'format B/rec':>14}{'pickle B/rec':>14}")
    for name, (n, a, b) in sorted(by_type.items(), key=lambda kv: -kv[1][2]):
        print(f"{name:<24}{n:>9}{a / n:>14.0f}{b / n:>14.0f}")

    rows = [
        ("format", _best(state_format.dumps, values, args.repeat), _best(state_format.loads, new, args.repeat)),
        ("pickle", _best(lambda v: pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL), values, args.repeat),
         _best(pickle.loads, old, args.repeat)),
        ("legacy", None, _best(state_codec.loads, old, args.repeat)),
    ]
    print(f"\n{'µs/record':<10}{'write':>10}{'read':>10}")
    for name, enc, dec in rows:
        print(f"{name:<10}{'-' if enc is None else f'{enc * 1e6:.1f}':>10}{dec * 1e6:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
