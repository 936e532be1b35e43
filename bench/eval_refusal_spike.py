"""Recall, false alarms per day and detection delay of the false-refusal spike detector alone.

Generated traffic (``semwatch.simulator``) goes through the real engine (refusal classifier on, as in
production) with ONLY the ``false_refusal_spike`` detector configured, by default with the entry in
``config/semwatch.yaml``. A trigger is a hit when its segment contains the label's segment and it
was detected inside [label start, label end + 5 min]; every other trigger is a false alarm.

    .venv/bin/python bench/eval_refusal_spike.py --seeds 1 2 3 --duration 1d --rate 3
    .venv/bin/python bench/eval_refusal_spike.py --set for_s=60 --set bucket_s=10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.false_refusal_spike import RefusalSpikeDetector, RefusalSpikeParams  # noqa: E402
from semwatch.contract import RunEvent, parse_ts  # noqa: E402
from semwatch.engine.core import Engine, EngineOptions  # noqa: E402
from semwatch.engine.detector import DetectorEnv  # noqa: E402
from semwatch.simulator.generate import generate, parse_duration, parse_time  # noqa: E402

SLACK_S = 300.0


def config_params() -> dict:
    import yaml

    data = yaml.safe_load((ROOT / "config" / "semwatch.yaml").read_text()) or {}
    for entry in data.get("detectors") or []:
        if entry.get("type") == "false_refusal_spike":
            return dict(entry)
    return {"name": "false-refusal-spike", "type": "false_refusal_spike"}


def run_seed(seed: int, start: float, duration: float, rate: float, overrides: dict) -> dict:
    params = RefusalSpikeParams.model_validate({**config_params(), **overrides})
    engine = Engine([RefusalSpikeDetector(params, DetectorEnv())], EngineOptions())
    events, labels = generate(seed, start, duration, rate)
    incidents = []
    n = 0
    t0 = time.perf_counter()
    last = start
    for raw in events:
        ev = RunEvent.model_validate(raw)
        last = ev.ts
        incidents.extend(engine.process(ev))
        n += 1
    incidents.extend(engine.advance_to(last + 3600))
    elapsed = time.perf_counter() - t0
    labels = [lb for lb in labels if lb["kind"] == "false_refusal_spike"]
    triggers = [i for i in incidents if i.event_action == "trigger"]
    hits, delays, false_alarms = set(), [], []
    for inc in triggers:
        at = parse_ts(inc.detected_at)
        match = None
        for j, lb in enumerate(labels):
            seg_ok = all(inc.segment.get(k) == v for k, v in lb["segment"].items())
            if seg_ok and parse_ts(lb["start"]) <= at <= parse_ts(lb["end"]) + SLACK_S:
                match = j
                break
        if match is None:
            false_alarms.append(inc)
        elif match not in hits:
            hits.add(match)
            delays.append(at - parse_ts(labels[match]["start"]))
    return {
        "seed": seed, "events": n, "seconds": round(elapsed, 1), "labels": len(labels),
        "hits": len(hits), "delays_s": [round(d, 1) for d in delays],
        "false_alarms": len(false_alarms),
        "false_alarm_summaries": [f"{i.detected_at} {i.severity} {i.summary}" for i in false_alarms],
        "hit_summaries": [f"{i.detected_at} {i.severity} {i.summary}" for i in triggers
                          if i not in false_alarms],
        "label_notes": [f"{lb['start']} {lb.get('note', '')}" for lb in labels],
        "resolves": sum(1 for i in incidents if i.event_action == "resolve"),
        "late": engine.stats.late,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--start", default="2026-01-05T00:00:00Z")
    ap.add_argument("--duration", default="1d")
    ap.add_argument("--rate", type=float, default=3.0)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="override a detector parameter (YAML value)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per seed")
    args = ap.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    start, duration = parse_time(args.start), parse_duration(args.duration)
    days = duration / 86400.0
    totals = {"labels": 0, "hits": 0, "false_alarms": 0, "delays": []}
    for seed in args.seeds:
        r = run_seed(seed, start, duration, args.rate, overrides)
        totals["labels"] += r["labels"]
        totals["hits"] += r["hits"]
        totals["false_alarms"] += r["false_alarms"]
        totals["delays"] += r["delays_s"]
        if args.json:
            print(json.dumps(r))
        else:
            print(f"seed {seed}: {r['events']} events in {r['seconds']} s; recall {r['hits']}/{r['labels']}, "
                  f"delay {r['delays_s']} s, false alarms {r['false_alarms']}, resolves {r['resolves']}, "
                  f"late {r['late']}")
            for note in r["label_notes"]:
                print(f"    label  {note}")
            for s in r["hit_summaries"]:
                print(f"    hit    {s}")
            for s in r["false_alarm_summaries"]:
                print(f"    FALSE  {s}")
    d = sorted(totals["delays"])
    print(f"total: recall {totals['hits']}/{totals['labels']}, false alarms/day "
          f"{totals['false_alarms'] / (days * len(args.seeds)):.2f}, delay s "
          f"median {d[len(d) // 2] if d else None} max {d[-1] if d else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
