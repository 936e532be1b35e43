"""Recall, timing and false alarms of the wrong-entity detectors on generated traffic.

Generated traffic (``semwatch.simulator``) goes through the real engine with ONLY the
``wrong_entity_action`` and ``wrong_entity_rate`` entries of ``config/semwatch.yaml`` and the real
``config/tools.yaml``. A labelled ``wrong_entity_action`` is found when a trigger of the per-run
detector names the label's run and was detected at exactly the offending event's time; every other
trigger (of either detector) is a false alarm.

    .venv/bin/python bench/eval_wrong_entity.py --seeds 1 2 3 --duration 1d --rate 3
    .venv/bin/python bench/eval_wrong_entity.py --set strict=true --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

import detectors.wrong_entity_action  # noqa: E402,F401  (registers both types)
import detectors.wrong_entity_rate  # noqa: E402,F401
from semwatch.contract import RunEvent, parse_ts  # noqa: E402
from semwatch.engine.core import Engine, EngineOptions  # noqa: E402
from semwatch.engine.detector import REGISTRY, DetectorEnv  # noqa: E402
from semwatch.engine.tools import ToolMap  # noqa: E402
from semwatch.simulator.generate import generate, parse_duration, parse_time  # noqa: E402

TYPES = ("wrong_entity_action", "wrong_entity_rate")


def build_engine(overrides: dict):
    """Only this detector pair, from its entries in config/semwatch.yaml and config/tools.yaml
    (read directly, so that other detectors' config does not matter here)."""
    data = yaml.safe_load((ROOT / "config" / "semwatch.yaml").read_text()) or {}
    entries = {e.get("type"): dict(e) for e in data.get("detectors") or [] if e.get("type") in TYPES}
    entries.setdefault("wrong_entity_action", {"name": "wrong-entity-action", "type": "wrong_entity_action"})
    entries.setdefault("wrong_entity_rate", {"name": "wrong-entity-rate", "type": "wrong_entity_rate"})
    entries["wrong_entity_action"].update(overrides)
    tools = ToolMap.model_validate(yaml.safe_load((ROOT / "config" / "tools.yaml").read_text()) or {})
    env = DetectorEnv(tools=tools, runbook_base_url=data.get("runbook_base_url"))
    dets = [REGISTRY[t](REGISTRY[t].Params.model_validate(entries[t]), env) for t in TYPES]
    return Engine(dets, EngineOptions(**{k: v for k, v in (data.get("engine") or {}).items()
                                         if k in ("allowed_lateness_s", "tick_s", "sweep_s")})), \
        [d.name for d in dets]


def run_seed(seed: int, start: float, duration: float, rate: float, overrides: dict) -> dict:
    engine, names = build_engine(overrides)
    events, labels = generate(seed, start, duration, rate)
    incidents = []
    n = side_effect_events = 0
    t0 = time.perf_counter()
    last = start
    for raw in events:
        ev = RunEvent.model_validate(raw)
        last = ev.ts
        if ev.tool_calls:
            side_effect_events += 1
        incidents.extend(engine.process(ev))
        n += 1
    incidents.extend(engine.advance_to(last + 7200))
    elapsed = time.perf_counter() - t0

    labels = [lb for lb in labels if lb["kind"] == "wrong_entity_action"]
    by_run = {lb["run_id"]: lb for lb in labels}
    triggers = [i for i in incidents if i.event_action == "trigger"]
    resolves = [i for i in incidents if i.event_action == "resolve"]
    found, at_event, false_alarms = set(), set(), []
    for inc in triggers:
        run_ids = inc.evidence.get("run_ids") or []
        label = next((by_run[r] for r in run_ids if r in by_run), None)
        if inc.detector != names[0] or label is None:
            false_alarms.append({"detector": inc.detector, "summary": inc.summary,
                                 "detected_at": inc.detected_at})
            continue
        found.add(label["run_id"])
        if abs(parse_ts(inc.detected_at) - parse_ts(label["start"])) < 1e-3:
            at_event.add(label["run_id"])
    unresolved = {i.dedup_key for i in triggers} - {i.dedup_key for i in resolves}
    return {
        "seed": seed, "events": n, "events_with_tool_calls": side_effect_events,
        "labels": len(labels), "found": len(found), "at_offending_event": len(at_event),
        "missed": sorted(set(by_run) - found), "false_alarms": len(false_alarms),
        "false_alarm_samples": false_alarms[:5], "unresolved": len(unresolved),
        "severities": sorted({i.severity for i in triggers}),
        "events_per_s": round(n / elapsed) if elapsed > 0 else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--start", default="2026-01-05T00:00:00Z")
    ap.add_argument("--duration", default="1d")
    ap.add_argument("--rate", type=float, default=3.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a wrong_entity_action parameter (YAML value)")
    ap.add_argument("--json", action="store_true", help="one JSON object per seed")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    start, duration = parse_time(args.start), parse_duration(args.duration)
    results = [run_seed(s, start, duration, args.rate, overrides) for s in args.seeds]
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"seed {r['seed']}: {r['events']} events, labels {r['labels']}, found {r['found']} "
                  f"(at the offending event {r['at_offending_event']}), false alarms {r['false_alarms']}, "
                  f"unresolved {r['unresolved']}, severities {r['severities']}, {r['events_per_s']} events/s")
            for fa in r["false_alarm_samples"]:
                print(f"    false alarm: {fa}")
    labels = sum(r["labels"] for r in results)
    found = sum(r["at_offending_event"] for r in results)
    fas = sum(r["false_alarms"] for r in results)
    if not args.json:
        print(f"total: {found}/{labels} labelled runs found at the offending event, {fas} false alarms "
              f"over {len(results)} x {args.duration}")
    return 0 if found == labels and fas == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
