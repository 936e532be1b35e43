"""The simulator's text corpora: word lists, phrase tables and templates kept as JSON in ``corpora/``."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def load(topic: str) -> dict[str, Any]:
    """``corpora/<topic>.json``, read once per process."""
    text = resources.files(__package__).joinpath("corpora", f"{topic}.json").read_text(encoding="utf-8")
    return json.loads(text)


def code_lines(lines: list[str]) -> str:
    """Code is stored as a list of lines, for reading; the simulator wants it as one string."""
    return "\n".join(lines)
