"""The shared contract every registered detector and rule must keep (like River's estimator checks).

Types are discovered, not listed: every module of ``detectors/`` and ``rules/`` is imported and each
entry of ``semwatch.engine.detector.REGISTRY`` is checked with the parameters and the (normal, anomalous)
event streams its class offers through ``_unit_test_params()`` and ``_unit_test_anomaly()``.

Checked for each type:

- its parameters validate (and survive a dump/validate round trip);
- a flat stream (the normal events) raises nothing, even after event time moves on a day;
- the anomalous tail raises at least one trigger of the type's kind;
- replay is deterministic: the same input twice gives identical incidents;
- state goes through the changelog's state format per key (no pickle) and restores mid-stream (a
  worker restart) with identical later output;
- observed, baseline, threshold and score are finite or None;
- every trigger's dedup_key starts with the detector name, every resolve follows a trigger with its
  key, the runbook_url is set when one is configured, and no incident carries an email address or
  raw request text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from array import array
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from semwatch.config import import_all_detectors
from semwatch.contract import KIND_PATTERN, Incident, RunEvent, parse_ts
from semwatch.engine import state_format
from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import REGISTRY, Detector, DetectorEnv, DetectorParams, SegmentState
from semwatch.engine.state import PlainState, schema_of, tag_of
from semwatch.enrich import Enrichment
from semwatch.enrich.prices import Pricing
from semwatch.enrich.refusal import RefusalVerdict

import_all_detectors()

REPO = Path(__file__).resolve().parent.parent
RUNBOOK_BASE = "https://runbooks.contract.test/semwatch"
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
TYPES = sorted(t for t, c in REGISTRY.items() if c.__module__.startswith(("detectors.", "rules.")))


@lru_cache(maxsize=1)
def env() -> DetectorEnv:
    """The repo's tool map and prices (defaults if a file is missing), and a runbook base URL."""
    from semwatch.engine.tools import ToolMap
    from semwatch.enrich.prices import PriceTable

    tools, prices = ToolMap(), None
    if (REPO / "config" / "tools.yaml").exists():
        tools = ToolMap.model_validate(yaml.safe_load((REPO / "config" / "tools.yaml").read_text()) or {})
    if (REPO / "config" / "prices.yaml").exists():
        prices = PriceTable.model_validate(yaml.safe_load((REPO / "config" / "prices.yaml").read_text()) or {})
    return DetectorEnv(tools=tools, prices=prices, runbook_base_url=RUNBOOK_BASE)


def params_for(cls: type[Detector]) -> DetectorParams:
    raw: dict[str, Any] = {"name": "contract-" + cls.type_name.replace("_", "-"), "type": cls.type_name}
    raw.update(cls._unit_test_params())
    return cls.Params.model_validate(raw)


def streams(cls: type[Detector]) -> tuple[list[RunEvent], list[RunEvent]]:
    try:
        normal, anomalous = cls._unit_test_anomaly()
    except NotImplementedError:
        pytest.fail(f"{cls.__name__} ({cls.type_name}) must implement _unit_test_anomaly()")
    assert normal and anomalous, "both the normal and the anomalous stream must be non-empty"
    return ([RunEvent.model_validate(e) for e in normal], [RunEvent.model_validate(e) for e in anomalous])


def new_engine(cls: type[Detector], data: dict | None = None) -> Engine:
    steps = [RefusalVerdict(), Pricing(env().prices)]
    return Engine([cls(params_for(cls), env())], EngineOptions(), data=data, enrich=Enrichment(steps))


def copies(events: list[RunEvent]) -> list[RunEvent]:
    # The engine enriches events in place (refusal, cost): every run gets pristine copies.
    return [e.model_copy(deep=True) for e in events]


def run(cls: type[Detector], events: list[RunEvent], engine: Engine | None = None,
        finish: bool = True) -> tuple[list[Incident], Engine]:
    engine = engine or new_engine(cls)
    out: list[Incident] = []
    for e in copies(events):
        out.extend(engine.process(e))
    if finish and events:
        out.extend(engine.advance_to(max(e.ts for e in events) + 86400))
    return out, engine


def dicts(incidents: list[Incident]) -> list[dict]:
    return [i.to_dict() for i in incidents]


@pytest.fixture(params=TYPES)
def cls(request) -> type[Detector]:
    return REGISTRY[request.param]


# -- the checks --------------------------------------------------------------------------------------------
def test_registry_is_discovered():
    assert {"threshold", "wrong_entity_action", "wrong_entity_rate"} <= set(REGISTRY)
    for name, c in REGISTRY.items():
        assert c.type_name == name and re.fullmatch(KIND_PATTERN, c.kind)


def test_every_state_class_is_registered():
    # The changelog writes only registered state classes: one that is not would stop the worker at
    # its first write. SegmentState itself is a base, never stored.
    homes = {"semwatch", "detectors", "rules"} | {c.__module__ for c in REGISTRY.values()}
    found, todo = [], list(PlainState.__subclasses__())
    while todo:
        c = todo.pop()
        todo.extend(c.__subclasses__())
        module = sys.modules.get(c.__module__)
        if c.__module__.split(".")[0] not in homes and c.__module__ not in homes:
            continue
        if getattr(module, c.__qualname__, None) is c and c is not SegmentState:  # not a pre-slots copy
            found.append(c)
    assert len(found) >= 13
    missing = [f"{c.__module__}.{c.__qualname__}" for c in found if tag_of(c) is None]
    assert not missing, f"decorate with @state_type('<tag>') (semwatch.engine.state): {missing}"
    for c in found:
        schema_of(c)  # every field is plain data


def test_params_validate(cls):
    p = params_for(cls)
    assert isinstance(p, DetectorParams) and isinstance(p, cls.Params)
    assert p.type == cls.type_name
    assert cls.Params.model_validate(p.model_dump()) == p
    with pytest.raises(pydantic.ValidationError):
        p.severity = "SEV-1"  # frozen: a detector cannot change its own config


def test_flat_stream_raises_nothing(cls):
    normal, _ = streams(cls)
    out, _ = run(cls, normal)
    assert out == [], [i.summary for i in out]


def test_anomalous_tail_triggers(cls):
    normal, anomalous = streams(cls)
    out, _ = run(cls, normal + anomalous)
    triggers = [i for i in out if i.event_action == "trigger"]
    kind = cls(params_for(cls), env()).kind  # a detector may set its kind per configuration
    assert any(i.kind == kind for i in triggers), \
        f"no {kind} trigger from {cls.type_name}: {[i.summary for i in out]}"
    check_incidents(cls, out, normal + anomalous)


def test_replay_is_deterministic(cls):
    normal, anomalous = streams(cls)
    first, _ = run(cls, normal + anomalous)
    second, _ = run(cls, normal + anomalous)
    assert dicts(first) == dicts(second)


def test_state_encodes_and_restores_mid_stream(cls):
    normal, anomalous = streams(cls)
    events = normal + anomalous
    expected, _ = run(cls, events)
    splits = sorted({len(normal) // 2, len(normal), len(normal) + len(anomalous) // 2})
    for split in splits:
        before, engine = run(cls, events[:split], finish=False)
        # As the worker's changelog does: every key's value written on its own, in the state format.
        stored = {k: state_format.dumps(v) for k, v in engine.data.items()}
        for key, value in engine.data.items():
            assert isinstance(value, SegmentState) or key.startswith("__"), \
                f"state under {key!r} is a {type(value).__name__}, not a SegmentState"
        restored = {k: state_format.loads(v) for k, v in stored.items()}
        for key, value in engine.data.items():
            assert same_state(restored[key], value), f"{key!r} changed in the round trip"
        after, _ = run(cls, events[split:], engine=new_engine(cls, data=restored))
        assert dicts(before + after) == dicts(expected), f"output differs after a restore at event {split}"


def test_no_personal_data_or_request_text_in_incidents(cls):
    normal, anomalous = streams(cls)
    events = []
    for e in normal + anomalous:
        if not e.request_text:
            e = e.model_copy(update={"request_text": f"Hi, I am jane.doe@example.com, ticket {e.event_id} "
                                                      "RAW-REQUEST-TEXT please help"})
        events.append(e)
    out, _ = run(cls, events)
    check_incidents(cls, out, events)


# -- shared assertions -------------------------------------------------------------------------------------
def check_incidents(cls: type[Detector], incidents: list[Incident], events: list[RunEvent]) -> None:
    p = params_for(cls)
    triggered: set[str] = set()
    texts = {e.request_text for e in events if e.request_text and len(e.request_text) >= 16}
    for inc in incidents:
        assert inc.detector == p.name
        for name in ("observed", "baseline", "threshold", "score"):
            value = getattr(inc, name)
            assert value is None or math.isfinite(value), f"{name} = {value!r}"
        assert inc.dedup_key.startswith(p.name), inc.dedup_key
        assert parse_ts(inc.window_start) <= parse_ts(inc.window_end)
        if inc.event_action == "trigger":
            triggered.add(inc.dedup_key)
            assert inc.runbook_url, "a runbook_url is configured (runbook_base_url) but missing"
            if p.runbook_url:
                assert inc.runbook_url == p.runbook_url
        else:
            assert inc.dedup_key in triggered, "a resolve must carry the key of an earlier trigger"
        blob = json.dumps(inc.to_dict())
        assert not EMAIL.search(blob), f"email address in incident: {EMAIL.search(blob).group(0)}"
        assert "RAW-REQUEST-TEXT" not in blob
        for text in texts:
            assert text not in blob, "raw request_text in incident"


def same_state(a: Any, b: Any) -> bool:
    """Equal in type and value all the way down (nan equals nan, arrays by their bytes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, array):
        return a.typecode == b.typecode and a.tobytes() == b.tobytes()
    if dataclasses.is_dataclass(a):
        return all(same_state(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


#: Every per-type check, for detectors defined outside detectors/ and rules/ (tests, plugins).
CHECKS = [test_params_validate, test_flat_stream_raises_nothing, test_anomalous_tail_triggers,
          test_replay_is_deterministic, test_state_encodes_and_restores_mid_stream,
          test_no_personal_data_or_request_text_in_incidents]
