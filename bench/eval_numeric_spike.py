"""Recall, false alarms per day, detection delay and speed of the token and cost spike detectors.

Generated traffic (``semwatch.simulator``) goes through the real engine (prices from
``config/prices.yaml`` fill the ~30 % of events without ``cost_usd``) with ONLY the detectors of
``detectors/run_outlier.py, runaway_loop.py, rate_spike.py`` configured: by default the entries of ``config/semwatch.yaml`` whose
type is ``run_outlier``, ``runaway_loop`` or ``rate_spike``.

A trigger is a hit when its kind equals the label's kind, its segment agrees with the label's
segment on every label they share (an app-level trigger for a route-level label counts), and it
was detected inside [label start, label end + 5 min]. Every other trigger is a false alarm.
Several triggers for one label (e.g. run-tokens and runaway-loop for one loop) are one hit.

Speed: the same events (already validated) through an engine with no detectors and through one
with these detectors; the difference is what these detectors cost per event.

    .venv/bin/python bench/eval_numeric_spike.py --seeds 1 2 3 --duration 1d --rate 3
    .venv/bin/python bench/eval_numeric_spike.py --only cost-per-route --set cost-per-route.min_ratio=4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

import detectors.rate_spike  # noqa: E402,F401  (registers the types)
import detectors.run_outlier  # noqa: E402,F401
import detectors.runaway_loop  # noqa: E402,F401
from semwatch.contract import RunEvent, parse_ts  # noqa: E402
from semwatch.engine.core import Engine, EngineOptions  # noqa: E402
from semwatch.engine.detector import REGISTRY, DetectorEnv  # noqa: E402
from semwatch.enrich import Enrichment  # noqa: E402
from semwatch.enrich.prices import PriceTable, Pricing  # noqa: E402
from semwatch.simulator.generate import generate, parse_duration, parse_time  # noqa: E402

SLACK_S = 300.0
TYPES = ("run_outlier", "runaway_loop", "rate_spike")
KINDS = ("token_spike", "cost_spike")
CACHE = Path("/tmp/semwatch-bench-cache")


def config_entries() -> list[dict]:
    data = yaml.safe_load((ROOT / "config" / "semwatch.yaml").read_text()) or {}
    return [dict(e) for e in data.get("detectors") or [] if e.get("type") in TYPES]


def prices() -> PriceTable:
    return PriceTable.model_validate(yaml.safe_load((ROOT / "config" / "prices.yaml").read_text()) or {})


def events_for(seed: int, start: float, duration: float, rate: float) -> tuple[list[dict], list[dict]]:
    """Generated events (cached on disk by generator version: generating a day takes ~30 s)."""
    CACHE.mkdir(exist_ok=True)
    sources = sorted(p for p in (ROOT / "semwatch" / "simulator").rglob("*") if p.suffix in (".py", ".json"))
    version = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    path = CACHE / f"gen-{version}-{seed}-{start:.0f}-{duration:.0f}-{rate:g}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    events, labels = generate(seed, start, duration, rate)
    out = (list(events), labels)
    with open(path, "wb") as fh:
        pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return out


def consistent(inc_segment: dict, label_segment: dict) -> bool:
    return all(inc_segment[k] == v for k, v in label_segment.items() if k in inc_segment)


def first_affected(raw: list[dict], label: dict):
    """Event time of the first event of the label's segment at or after the label's start."""
    start = parse_ts(label["start"])
    seg = label["segment"]
    for e in raw:
        if all(str(e.get(k)) == v for k, v in seg.items()):
            ts = parse_ts(e["ts"])
            if ts >= start:
                return ts
    return None


def build(entries: list[dict]):
    env = DetectorEnv()
    return [REGISTRY[e["type"]](REGISTRY[e["type"]].Params.model_validate(e), env) for e in entries]


def run_engine(detectors, events: list[RunEvent], table: PriceTable):
    engine = Engine(detectors, EngineOptions(), enrich=Enrichment([Pricing(table)]))
    incidents = []
    t0 = time.process_time()
    for ev in events:
        incidents.extend(engine.process(ev))
    elapsed = time.process_time() - t0
    incidents.extend(engine.advance_to(events[-1].ts + 3600))
    return incidents, elapsed, engine


def run_seed(seed: int, start: float, duration: float, rate: float, entries: list[dict]) -> dict:
    raw, labels = events_for(seed, start, duration, rate)
    table = prices()
    # Validate once per copy: the engine fills cost_usd in place, and each run needs fresh events.
    events = [RunEvent.model_validate(e) for e in raw]
    _, base_s, _ = run_engine([], events, table)
    events = [RunEvent.model_validate(e) for e in raw]
    incidents, elapsed, engine = run_engine(build(entries), events, table)
    triggers = [i for i in incidents if i.event_action == "trigger"]
    hits, delays, from_first, false_alarms, hit_lines = {}, {}, {}, [], []
    for inc in triggers:
        at = parse_ts(inc.detected_at)
        match = None
        for j, lb in enumerate(labels):
            if lb["kind"] == inc.kind and consistent(inc.segment, lb["segment"]) and \
                    parse_ts(lb["start"]) <= at <= parse_ts(lb["end"]) + SLACK_S:
                match = j
                break
        if match is None:
            false_alarms.append(inc)
            continue
        hit_lines.append(f"{inc.detected_at} {inc.detector} {inc.severity} {inc.summary}")
        d = at - parse_ts(labels[match]["start"])
        if match not in hits or d < delays[match]:
            hits[match], delays[match] = inc.detector, d
            first = first_affected(raw, labels[match])
            from_first[match] = None if first is None else at - first
    mine = [lb for lb in labels if lb["kind"] in KINDS]
    n = len(events)
    resolves = [i for i in incidents if i.event_action == "resolve"]
    return {
        "seed": seed, "events": n, "labels": len(mine), "hits": len(hits),
        "delays_s": {labels[j]["kind"]: round(d, 1) for j, d in delays.items()},
        # From the first event of the label's segment at or after its start (a quiet route at
        # night may see its first expensive call minutes after the switch).
        "delays_from_first_event_s": {labels[j]["kind"]: None if d is None else round(d, 1)
                                      for j, d in from_first.items()},
        "missed": [f"{lb['kind']} {lb['start']} {lb.get('note', '')}" for j, lb in enumerate(labels)
                   if lb["kind"] in KINDS and j not in hits],
        "false_alarms": len(false_alarms),
        "false_alarm_lines": [f"{i.detected_at} {i.detector} {i.severity} {i.summary}" for i in false_alarms],
        "hit_lines": hit_lines,
        "label_notes": [f"{lb['kind']} {lb['start']}..{lb['end']} {lb.get('note', '')}" for lb in mine],
        "resolves": len(resolves),
        "unresolved": len(triggers) - len(resolves),
        "events_per_s_engine_only": round(n / base_s),
        "events_per_s_with_detectors": round(n / elapsed),
        "detectors_us_per_event": round((elapsed - base_s) / n * 1e6, 2),
        "segments": engine.segments_active(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--start", default="2026-01-05T00:00:00Z")
    ap.add_argument("--duration", default="1d")
    ap.add_argument("--rate", type=float, default=3.0)
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="only these detectors")
    ap.add_argument("--set", action="append", default=[], metavar="NAME.PARAM=VALUE",
                    help="override a detector parameter (YAML value)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per seed")
    args = ap.parse_args(argv)
    entries = config_entries()
    if args.only:
        entries = [e for e in entries if e["name"] in args.only]
    for item in args.set:
        key, _, value = item.partition("=")
        name, _, param = key.partition(".")
        for e in entries:
            if e["name"] == name:
                e[param] = yaml.safe_load(value)
    if not entries:
        print("no run_outlier/runaway_loop/rate_spike entries in config/semwatch.yaml", file=sys.stderr)
        return 2
    print("detectors:", ", ".join(e["name"] for e in entries))
    start, duration = parse_time(args.start), parse_duration(args.duration)
    days = duration / 86400.0
    tot = {"labels": 0, "hits": 0, "fa": 0, "delays": {}, "first": {}, "eps": [], "us": []}
    for seed in args.seeds:
        r = run_seed(seed, start, duration, args.rate, entries)
        tot["labels"] += r["labels"]
        tot["hits"] += r["hits"]
        tot["fa"] += r["false_alarms"]
        for k, d in r["delays_s"].items():
            tot["delays"].setdefault(k, []).append(d)
        for k, d in r["delays_from_first_event_s"].items():
            if d is not None:
                tot["first"].setdefault(k, []).append(d)
        tot["eps"].append(r["events_per_s_with_detectors"])
        tot["us"].append(r["detectors_us_per_event"])
        if args.json:
            print(json.dumps(r))
            continue
        print(f"seed {seed}: {r['events']} events; recall {r['hits']}/{r['labels']}, delay {r['delays_s']} s "
              f"(from the first affected event {r['delays_from_first_event_s']} s), "
              f"false alarms {r['false_alarms']}, resolves {r['resolves']} (unresolved {r['unresolved']}); "
              f"engine only {r['events_per_s_engine_only']}/s, with detectors "
              f"{r['events_per_s_with_detectors']}/s ({r['detectors_us_per_event']} us/event)")
        for line in r["label_notes"]:
            print(f"    label  {line}")
        for line in r["hit_lines"]:
            print(f"    hit    {line}")
        for line in r["missed"]:
            print(f"    MISSED {line}")
        for line in r["false_alarm_lines"]:
            print(f"    FALSE  {line}")
    delays = {k: f"median {sorted(v)[len(v) // 2]} max {max(v)} s (from first affected event: max "
                 f"{max(tot['first'].get(k, [0]))} s)" for k, v in tot["delays"].items()}
    print(f"total: recall {tot['hits']}/{tot['labels']}, false alarms/day "
          f"{tot['fa'] / (days * len(args.seeds)):.2f}, delay {delays}, "
          f"detectors {sum(tot['us']) / len(tot['us']):.2f} us/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
