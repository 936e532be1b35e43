"""Redaction of evidence excerpts: incidents, logs and metrics never carry emails, phone numbers,
secrets or raw prompt text.

>>> redact("mail jane.doe@example.com or call +1 (415) 555-0132, key sk-live-abcdef1234567890XYZ")
'mail [email] or call [phone], key [secret]'
"""

from __future__ import annotations

import re

_PATTERNS = [
    # Secrets first: they can contain digits that look like phone numbers.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), "[secret]"),
    (re.compile(r"\b(?:sk|pk|rk|xox[abprs]|ghp|gho|ghs|glpat|AKIA|ASIA|AIza)[-_A-Za-z0-9]{12,}\b"), "[secret]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"), "[secret]"),  # JWT
    (re.compile(r"(?i)\b(bearer|token|api[_-]?key|secret|password|passwd|pwd)\b(\s*[:=]\s*|\s+)\S+"), r"\1 [secret]"),
    (re.compile(r"\b[A-Za-z0-9_\-]{32,}\b"), "[secret]"),  # long opaque tokens
    (re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[number]"),  # card-like digit runs
    (re.compile(r"(?<![\w])\+?\d{1,3}?[\s.\-]?\(?\d{2,4}\)?[\s.\-]?\d{3,4}[\s.\-]?\d{3,4}(?![\w])"), "[phone]"),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[number]"),  # SSN-like
    # International numbers in short groups (+33 6 12 34 56 78, +81 3-1234-5678), 8+ digits.
    (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,6}(?!\w)"),
     lambda m: "[phone]" if sum(c.isdigit() for c in m.group(0)) >= 8 else m.group(0)),
    (re.compile(r"\b0\d(?:[ .\-]?\d{2}){4}\b"), "[phone]"),  # national in pairs: 06 12 34 56 78
]

_CUT_TAIL = re.compile(r"[\s\d()+.\-]*\S*$")


def redact(text: str | None, max_chars: int = 160) -> str:
    """Redacted, single-line excerpt of at most ``max_chars`` characters."""
    if not text:
        return ""
    if len(text) > max_chars * 4:
        # The cut may halve an email, key or phone number that no pattern then recognises: drop
        # the partial last token (and the digit groups before it).
        text = _CUT_TAIL.sub("", text[: max_chars * 4])
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text
