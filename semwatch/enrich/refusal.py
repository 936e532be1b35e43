"""Refusal verdicts for events whose producer did not say: ``refusal`` from ``response_text``.

Producers that know (OpenAI ``message.refusal``, Anthropic ``stop_reason: "refusal"``,
``finish_reason: content_filter``) set ``refusal`` themselves; that is ground truth and is kept.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from semwatch.contract import RunEvent


class RefusalVerdict:
    """Enrichment step: ``refusal`` from the classifier when the event has text but no verdict."""

    name = "refusal"

    def __init__(self, is_refusal: Optional[Callable[[str], bool]] = None):
        self._is_refusal = is_refusal

    def fill(self, event: RunEvent) -> Optional[dict[str, Any]]:
        if event.refusal is not None or not event.response_text:
            return None
        if self._is_refusal is None:  # loaded on first use: replay of a text-free recording skips it
            from semwatch.enrich.refusal_patterns import is_refusal

            self._is_refusal = is_refusal
        return {"refusal": self._is_refusal(event.response_text)}
