"""Enrichment: fields the producer left out, filled in before detection, as explicit steps.

Each step looks at an event and returns the fields it fills (or None); :class:`Enrichment` runs
them in order and returns a *new* event with those fields set, leaving the input untouched. Steps
only fill fields that are absent, so enriching an enriched event changes nothing.

>>> from semwatch.contract import RunEvent
>>> ev = RunEvent(schema_version="1", event_id="e1", run_id="r1", ts=0, app="a", model="m",
...               response_text="I'm sorry, but I can't help with that.")
>>> from semwatch.enrich.refusal import RefusalVerdict
>>> out = Enrichment([RefusalVerdict()])(ev)
>>> (ev.refusal, out.refusal, Enrichment([RefusalVerdict()])(out) is out)
(None, True, True)
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

from semwatch.contract import RunEvent


class EnrichmentStep(Protocol):
    name: str

    def fill(self, event: RunEvent) -> Optional[dict[str, Any]]: ...


class StateStore(Protocol):
    """Keyed state a stateful step keeps (the engine's state mapping: changelogged, replayed)."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


class DictStore:
    """A :class:`StateStore` over a plain dict (offline tools that enrich without an engine)."""

    def __init__(self, data: Optional[dict] = None):
        self.data = {} if data is None else data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value


class Enrichment:
    """The configured steps, in order; counts what each filled (``filled[name]``)."""

    def __init__(self, steps: Sequence[EnrichmentStep]):
        self.steps = list(steps)
        self.filled: dict[str, int] = {s.name: 0 for s in self.steps}

    def __call__(self, event: RunEvent, store: Optional[StateStore] = None) -> RunEvent:
        """The event with what the steps filled; ``store`` is the state of stateful steps (a step
        that learns online from labelled events keeps its per-app state there)."""
        for step in self.steps:
            fields = step.fill(event, store) if getattr(step, "stateful", False) else step.fill(event)
            if fields:
                self.filled[step.name] += 1
                event = event.model_copy(update=fields)  # a later step sees what earlier ones filled
        return event
