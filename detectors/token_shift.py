"""``token_shift``: a segment's responses come back truncated or far longer than usual.

The per-event shape of a token explosion: after a prompt or model change, a share of a chat route's
requests produce several times their usual output, many cut off at the token limit
(``finish_reason: length``). Nothing multi-step needs to happen, and the route's tokens per minute
may hide it in the day's swings; the *share* of such responses does not.

An event is a hit when its ``finish_reason`` says it was cut off (``length``, ``max_tokens``) or
its ``field`` (``output_tokens`` by default) is far above the segment's recent norm: at least
``far_ratio`` times the median and ``far_z`` robust standard deviations above it on a log scale
(median and MAD of a ring of recent values, :class:`semwatch.engine.baselines.SampleRing`, learnt
only while no rise is in progress). The share of hits is judged by the sequential share test of
:mod:`semwatch.engine.share` against the segment's own learnt share: within seconds on a busy route,
on everything since the rise began on a quiet one, from the first hour of traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import Field

from semwatch.contract import RunEvent
from semwatch.engine.baselines import SampleRing
from semwatch.engine.detector import Context, register, unit_event
from semwatch.engine.formatting import compact_number
from semwatch.engine.share import NormRingParams, ShareSpikeDetector, ShareState
from semwatch.engine.state import state_type

TRUNCATED = frozenset({"length", "max_tokens", "max_output_tokens", "MAX_TOKENS", "token_limit"})


class TokenShiftParams(NormRingParams):
    type: str = "token_shift"
    group_by: tuple[str, ...] = ("app", "route", "model")
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    # The per-event token count judged against the segment's norm.
    field: str = Field(default="output_tokens", pattern=r"^(output_tokens|input_tokens|total_tokens)$")
    # Far above the norm: at least far_ratio x the median ... (raise: fewer hits, later pages)
    far_ratio: float = Field(default=4.0, gt=1)
    # ... and far_z robust sd above it on a log scale.
    far_z: float = Field(default=3.0, gt=0)
    # Truncated responses count as hits too.
    count_truncated: bool = True


@state_type("token_shift")
@dataclass(slots=True)
class TokenShiftState(ShareState):
    ring: Optional[SampleRing] = None
    far_hits: int = 0  # hits since the onset that were far above the norm (not only truncated)
    truncated_hits: int = 0


@register
class TokenShift(ShareSpikeDetector):
    """A rise in the share of responses that are truncated or far longer than the segment's norm."""

    type_name = "token_shift"
    kind = "token_spike"
    Params = TokenShiftParams
    params: TokenShiftParams
    what = "truncated or far longer than usual"
    # Materiality and the false-alarm budget trade pages against earliness.
    tuning_space = {"min_increase": [0.05, 0.10, 0.20], "false_alarm_days": [30.0, 90.0, 365.0]}

    def _new_state(self) -> TokenShiftState:
        return TokenShiftState(segment={}, ring=SampleRing.empty(self.params.ring_size))

    def hit(self, event: RunEvent, st: ShareState, ctx: Context) -> Optional[bool]:
        p = self.params
        value = getattr(event, p.field) if p.field != "total_tokens" else event.numeric("total_tokens")
        truncated = p.count_truncated and event.finish_reason in TRUNCATED
        if value is None and not truncated:
            return None
        assert isinstance(st, TokenShiftState)
        ring = st.ring
        if ring is None:
            ring = st.ring = SampleRing.empty(p.ring_size)
        far = False
        if value is not None:
            y = math.log1p(value)
            if ring.due(event.ts, p.refresh_s, 1):
                ring.refresh(event.ts, event.ts)
            if ring.count >= p.min_samples and ring.median == ring.median:
                far = (y - ring.median >= p.far_z * max(ring.scale, 0.05)
                       and value >= p.far_ratio * math.expm1(ring.median))
            if not far and not truncated and self.learning(st):
                ring.add(y, event.ts, p.sample_every_s)
        if far or truncated:
            if self.learning(st):
                st.far_hits = st.truncated_hits = 0
            st.far_hits += far
            st.truncated_hits += truncated
        return far or truncated

    def detail(self, event: RunEvent, st: ShareState) -> str:
        value = getattr(event, self.params.field, None)
        parts = [f"finish_reason={event.finish_reason}"] if event.finish_reason in TRUNCATED else []
        if value is not None:
            parts.append(f"{self.params.field}={compact_number(value)}")
        return " ".join(parts)

    def describe(self, st: ShareState, rate: float, p0: float, action: str) -> str:
        text = super().describe(st, rate, p0, action)
        if action == "trigger" and isinstance(st, TokenShiftState) and st.ring is not None \
                and st.ring.median == st.ring.median:
            text += (f"; usual {self.params.field} {compact_number(math.expm1(st.ring.median))}, "
                     f"{st.truncated_hits} truncated")
        return text

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"min_baseline_n": 100, "min_samples": 30}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        """An hour of chat at 2 requests/s, then a quarter of responses 8x longer and truncated."""
        t0 = 1_767_600_000.0
        normal = [unit_event(f"n{i}", f"r{i}", t0 + 0.5 * i, output_tokens=200 + (i * 37) % 300,
                             input_tokens=900, finish_reason="stop", conversation_id=f"c{i % 97}")
                  for i in range(7200)]
        anomalous = []
        for i in range(600):
            long = i % 4 == 0
            anomalous.append(unit_event(f"a{i}", f"ra{i}", t0 + 3600 + 0.5 * i, input_tokens=900,
                                        output_tokens=4000 if long else 200 + (i * 37) % 300,
                                        finish_reason="length" if long else "stop",
                                        conversation_id=f"ca{i}"))
        return normal, anomalous
