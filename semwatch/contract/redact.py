"""Redaction of evidence excerpts: incidents, logs and metrics never carry emails, phone numbers,
secrets, bank account numbers or raw prompt text.

>>> redact("mail jane.doe@example.com or call +1 (415) 555-0132, key sk-live-abcdef1234567890XYZ")
'mail [email] or call [phone], key [secret]'
>>> redact("my password is hunter2, the PIN is 1234; IBAN DE89 3704 0044 0532 0130 00, josé@correo.es")
'my password is [secret], the PIN is [secret]; IBAN [iban], [email]'
>>> redact("Your password is incorrect: the token limit was reached after 4096 tokens.")
'Your password is incorrect: the token limit was reached after 4096 tokens.'
"""

from __future__ import annotations

import re

# Words that name a credential. Most also appear in ordinary prose ("the token limit", "the pin
# is located"), so a value after them without "=" or ":" must look like one (_kind, _looks_secret).
_CREDENTIAL = (r"(?:aws_?secret_?(?:access_?)?key|secret_?access_?key|pass(?:word|wd|phrase|code)|"
               r"pass\s+code|pwd|pin(?:\s+(?:code|number))?|otp|one[-\s]time\s+(?:code|password|pin)|"
               r"(?:verification|security|access|login)\s+code|secret(?:\s+key)?|api[_\s-]?key|"
               r"(?:access|auth|refresh|session)[_\s-]?token|token)")
_VALUE = r"[\"'\u201c\u2018]?([^\s\"'\u201d\u2019<>]+)"
# "<credential>: value", "<credential>=value": whatever follows is the secret.
_ASSIGNED = re.compile(rf"(?i)\b({_CREDENTIAL})(\s*(?::|=>?)\s*){_VALUE}")
# "my password is hunter2", "the pin was 1234", "passcode is now 'x'".
_SAID = re.compile(rf"(?i)\b({_CREDENTIAL})"
                   rf"(\s+(?:is|was|are)\s+(?:now\s+|still\s+|(?:set|changed|reset)\s+to\s+)?){_VALUE}")
# "password hunter2", "pin 4321", "token abcd1234efgh": only when the word after looks like a secret.
_BARE = re.compile(rf"(?i)\b({_CREDENTIAL})(\s+){_VALUE}")
# What follows "password is" in ordinary sentences ("your password is incorrect").
_ORDINARY = frozenset("""
    a about above accepted active all also always an and any at attached automatically available
    being below blank case case-sensitive changed compromised correct created different disabled
    displayed empty enabled encrypted expired expiring expires for forgotten generated given hashed
    her hidden his how if in inactive included incorrect invalid it its just listed locked long
    longer lost mandatory missing my needed never no none not null of off on one only optional or
    our private protected provided ready rejected required reset right safe same secret secure sent
    set short shorter shown something still stored strong that the their then this to too typically
    unknown updated used usually valid very visible weak what written wrong your
""".split())
_TRAILING = ".,;:!?)]}"


def _keep_trailing(value: str) -> tuple[str, str]:
    core = value.rstrip(_TRAILING)
    return core, value[len(core):]


def _kind(word: str) -> str:
    """'word' (a password: anything but an ordinary continuation), 'number' (PINs and codes: has
    digits) or 'token' (must look machine-made)."""
    word = word.lower()
    if word.startswith(("pin", "otp", "passcode", "pass ")) or word.endswith("code"):
        return "number"
    if word.startswith("pass") or word in ("pwd",):
        return "word"
    return "token"


def _looks_secret(value: str, kind: str) -> bool:
    digit = any(c.isdigit() for c in value)
    if kind == "token":
        return len(value) >= 8 and digit and any(c.isalpha() for c in value)
    return len(value) >= 4 and digit


def _assigned(m: re.Match) -> str:
    core, tail = _keep_trailing(m.group(3))
    return f"{m.group(1)}{m.group(2)}[secret]{tail}" if core else m.group(0)


def _said(m: re.Match) -> str:
    core, tail = _keep_trailing(m.group(3))
    kind = _kind(m.group(1))
    if not core or core.startswith("[") or (core.lower() in _ORDINARY if kind == "word"
                                            else not _looks_secret(core, kind)):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}[secret]{tail}"


def _bare(m: re.Match) -> str:
    core, tail = _keep_trailing(m.group(3))
    if core.startswith("[") or not _looks_secret(core, _kind(m.group(1))):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}[secret]{tail}"


def _aws_secret(m: re.Match) -> str:
    """40 base64 characters with '/' or '+' (an AWS secret access key), not a path: random keys
    mix upper and lower case about evenly, paths are mostly lower case."""
    token = m.group(0)
    letters = [c for c in token if c.isalpha()]
    upper = sum(c.isupper() for c in letters)
    if any(c.isdigit() for c in token) and letters and 0.2 <= upper / len(letters) <= 0.85:
        return "[secret]"
    return token


def _iban(m: re.Match) -> str:
    """An IBAN (ISO 13616) when its check digits say so; trailing groups that are not part of it
    (a following upper-case word) are given back. After the word IBAN, any such shape goes."""
    text = m.group(0)
    groups = text.split(" ")
    if sum(c.isdigit() for c in text[4:]) < 8:  # account numbers are mostly digits; words are not
        return text
    while groups:
        compact = "".join(groups).upper()
        if 15 <= len(compact) <= 34 and _iban_checksum_ok(compact):
            return "[iban]" + text[len(" ".join(groups)):]
        groups.pop()
    return "[iban]" if "iban" in m.string[max(0, m.start() - 12):m.start()].lower() else text


def _iban_checksum_ok(iban: str) -> bool:
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


_PATTERNS = [
    # Secrets first: they can contain digits that look like phone numbers.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), "[secret]"),
    (re.compile(r"\b(?:sk|pk|rk|xox[abprs]|ghp|gho|ghs|glpat|AKIA|ASIA|AIza)[-_A-Za-z0-9]{12,}\b"), "[secret]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"), "[secret]"),  # JWT
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 [secret]"),
    (_ASSIGNED, _assigned),
    (_SAID, _said),
    (_BARE, _bare),
    (re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9]*[/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), _aws_secret),
    (re.compile(r"\b[A-Za-z0-9_\-]{32,}\b"), "[secret]"),  # long opaque tokens
    # Any script in the local part and the domain (IDN), ASCII or full-width at sign.
    (re.compile(r"[\w.%+'\-]+[@\uff20](?:[\w\-]+\.)+(?:[^\W\d_]{2,}|xn--[\w\-]+)"), "[email]"),
    (re.compile(r"\b[A-Z]{2}\d{2}(?:(?: [A-Z0-9]{4})+(?: [A-Z0-9]{1,3})?|[A-Z0-9]{11,30})\b"), _iban),
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
