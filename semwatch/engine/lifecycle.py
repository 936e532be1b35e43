"""The incident lifecycle shared by every windowed detector and rule.

ok --breach--> pending --breach held for `for_s`--> firing (trigger) --clear held for `clear_for_s`--> ok (resolve)

Breach and clear are separate conditions (hysteresis): a detector breaches above its threshold and
clears only below a lower clear threshold, so a rate hovering at the threshold does not flap.
One trigger per ongoing problem: while firing, further breaches add nothing.

>>> lc, policy = Lifecycle(), LifecyclePolicy(for_s=60, clear_for_s=120)
>>> [policy.step(lc, t, breached, cleared) for t, breached, cleared in
...  [(0, True, False), (30, True, False), (60, True, False), (90, False, True), (210, False, True)]]
[None, None, 'trigger', None, 'resolve']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from semwatch.engine.state import PlainState, state_type


@state_type("lifecycle")
@dataclass(slots=True)
class Lifecycle(PlainState):
    status: str = "ok"  # ok | pending | firing
    since: float = 0.0  # start of the breach that led to pending/firing
    fired_at: float = 0.0
    clear_since: Optional[float] = None
    severity: Optional[str] = None  # severity of the trigger, repeated on the resolve
    peak: float = 0.0  # the largest observed value while pending/firing (for the resolve)

    @property
    def active(self) -> bool:
        return self.status != "ok"


@dataclass(frozen=True)
class LifecyclePolicy:
    for_s: float = 0.0
    clear_for_s: float = 0.0

    def step(self, lc: Lifecycle, now: float, breached: bool, cleared: bool) -> Optional[str]:
        """Advance the state machine; returns 'trigger', 'resolve' or None."""
        if lc.status == "ok":
            if not breached:
                return None
            lc.status, lc.since, lc.clear_since = "pending", now, None
        if lc.status == "pending":
            if not breached:
                lc.status = "ok"
                return None
            if now - lc.since >= self.for_s:
                lc.status, lc.fired_at = "firing", now
                return "trigger"
            return None
        # firing
        if not cleared:
            lc.clear_since = None
            return None
        if lc.clear_since is None:
            lc.clear_since = now
        if now - lc.clear_since >= self.clear_for_s:
            lc.status, lc.clear_since = "ok", None
            return "resolve"
        return None
