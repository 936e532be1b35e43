"""token_shift: the share of truncated or far-longer-than-usual responses, per segment."""

from __future__ import annotations

import math
import random

from detectors.token_shift import TokenShift, TokenShiftParams
from semwatch.contract import RunEvent, parse_ts
from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import DetectorEnv

T0 = 1_767_600_000.0
HOUR = 3600.0


def engine(**params) -> Engine:
    p = TokenShiftParams.model_validate({"name": "token-shift", "type": "token_shift", **params})
    return Engine([TokenShift(p, DetectorEnv())], EngineOptions())


def chat(start: float, seconds: float, per_min: float, seed: int, *, route: str = "chat",
         long_share: float = 0.0, id0: int = 0) -> list[RunEvent]:
    """Poisson arrivals with heavy-tailed (log-normal) outputs, capped at 2,000 tokens like a
    max_tokens setting; a share of requests may answer 8x longer."""
    rng = random.Random(seed)
    out, t, i = [], start, id0
    while True:
        t += rng.expovariate(per_min / 60.0)
        if t >= start + seconds:
            return out
        tokens = int(math.exp(rng.gauss(math.log(350), 0.8)))
        if rng.random() < long_share:
            tokens *= 8
        finish = "length" if tokens >= 2000 else "stop"
        out.append(RunEvent.model_validate({
            "schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": t, "app": "kimi-chat",
            "route": route, "model": "m", "input_tokens": 7000, "output_tokens": min(tokens, 2000),
            "finish_reason": finish, "conversation_id": f"c{i}"}))
        i += 1


def run(events, eng=None):
    eng = eng or engine()
    out = []
    for e in sorted(events, key=lambda e: e.ts):
        out.extend(eng.process(e))
    out.extend(eng.advance_to(max(e.ts for e in events) + 3600))
    return out


def test_a_quarter_of_responses_eight_times_longer_is_found_within_two_minutes():
    onset = T0 + 2 * HOUR
    normal = chat(T0, 2 * HOUR, 110, seed=1)
    incident = chat(onset, 15 * 60, 110, seed=2, long_share=0.25, id0=10**6)
    after = chat(onset + 15 * 60, HOUR, 110, seed=3, id0=2 * 10**6)
    out = run(normal + incident + after)
    triggers = [i for i in out if i.event_action == "trigger"]
    assert len(triggers) == 1, [i.summary for i in out]
    assert 0 <= parse_ts(triggers[0].detected_at) - onset <= 120
    assert triggers[0].kind == "token_spike" and triggers[0].observed > 0.1
    resolves = [i for i in out if i.event_action == "resolve"]
    assert len(resolves) == 1 and parse_ts(resolves[0].detected_at) > onset + 15 * 60


def test_heavy_tailed_ordinary_traffic_raises_nothing_from_the_first_hour():
    for seed in (4, 5, 6):
        assert run(chat(T0, 6 * HOUR, 60, seed=seed)) == []


def test_a_quiet_route_is_judged_on_everything_since_the_rise():
    onset = T0 + 6 * HOUR
    quiet = chat(T0, 6 * HOUR, 2, seed=7, route="translate")
    bad = chat(onset, HOUR, 2, seed=8, route="translate", long_share=0.3, id0=10**6)
    triggers = [i for i in run(quiet + bad) if i.event_action == "trigger"]
    assert len(triggers) == 1 and parse_ts(triggers[0].detected_at) - onset <= 30 * 60
