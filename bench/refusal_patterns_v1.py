"""The retired hand-written refusal classifier (semwatch 0.1), kept for comparison only.

``bench/bench_refusal.py`` measures it next to the learned classifier that replaced it
(``semwatch/enrich/refusal_model.py``; docs/refusal-classifier.md says why: on real outputs of other
models it missed a third to a half of the refusals). Nothing in semwatch imports it.

    >>> score("I'm sorry, but I can't help with that.") > 0.9
    True
    >>> is_refusal("Sorry for the delay - here is the script you asked for.")
    False

How it works
------------
1. Normalise: lower-case, curly quotes and dashes to ASCII, and cap huge
   inputs to their head (first ``HEAD_CHARS``) and tail (last ``TAIL_CHARS``):
   a refusal is stated at the start or at the end of a response.
2. Find evidence that the response declines, in named feature groups (see
   ``_GROUPS``): a first-person declining modal + an action verb ("I can't
   help", "I'm unable to provide"), fixed decline phrases ("not something I
   can do", "I must decline"), scope limits, policy/safety/guidelines,
   "As an AI", capability statements, and redirects to a professional or to
   support; plus an apology opener.
3. Weigh each hit by where it sits: the *lead* (first two sentences) and the
   *tail* (last sentence) carry the response's verdict; the *middle* is more
   often an aside.
4. Subtract counter-evidence that the response complies: code blocks,
   numbered steps, "here's ...", actions reported as done, a hedge followed by
   ", but <substantive answer>", "while I can't X, ...", idioms such as
   "I can't stress enough", and refusals inside quotation marks.
5. Sum the weights into a logit and squash it with the logistic function.

Speed (>= 20k texts/s on one core for 50-400 character responses): every
pattern starts with a literal word, and is only run when that literal occurs
in the text (a C-speed substring test); context checks before/after a hit and
the sentence position are computed only for hits.

The weights were tuned by hand on the ``split == "tune"`` rows of
``tests/data/refusal_texts.jsonl`` and then on the errors of
``refusal_texts_independent_a.jsonl`` (a second author's set);
``refusal_texts_independent_b.jsonl`` is sealed. ``bench/bench_refusal.py``
reports each (see tests/data/README.md). On the sealed set: precision 0.99,
recall 0.78 — the misses are mostly soft or buried declines and other
languages; false positives are rare, so a spike of refusals it does see is
real.
"""

from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple, Optional, Tuple

__all__ = ["score", "is_refusal", "explain", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.5

# Only this much of a huge response is looked at (head + tail).
HEAD_CHARS = 2000
TAIL_CHARS = 1000

# Logit of a response with no evidence either way (score ~0.05).
_BIAS = -3.0

# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

# Curly/odd apostrophes and quotes -> ASCII so one pattern covers "can’t".
# (A replace chain: str.translate with a dict is slow per character.)
_REPLACE = (
    ("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"), ("\u00b4", "'"),
    ("\u201c", '"'), ("\u201d", '"'), ("\u2014", " - "), ("\u2013", " - "),
    ("\u00a0", " "),
    # invisible format characters (zero-width, bidi controls, BOM)
    ("\u200b", ""), ("\u200c", ""), ("\u200d", ""), ("\u200e", ""), ("\u200f", ""),
    ("\u202a", ""), ("\u202b", ""), ("\u202c", ""), ("\u202d", ""), ("\u202e", ""),
    ("\u2060", ""), ("\ufeff", ""),
)


def _prepare(text: str) -> str:
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]
    if not text.isascii():
        for a, b in _REPLACE:
            if a in text:
                text = text.replace(a, b)
    return text.lower().strip()


# Sentence ends: terminal punctuation or a colon (+ closing quotes) followed by
# whitespace ("Final Answer: I can't ..."), or a line break. A single
# character class is much faster than an alternation; "3.14" is filtered out
# in _sentence_starts.
_SENT_END = re.compile(r"[.!?:\n][\"')\]]*\s*")

# ---------------------------------------------------------------------------
# Pattern machinery
# ---------------------------------------------------------------------------

_META = set("\\()[]{}.*+?|^$")


def _literal_prefix(src: str) -> str:
    """Leading literal text of a regex source (used as a cheap pre-check)."""
    out = []
    for ch in src:
        if ch in _META:
            if ch in "?*{" and out:
                out.pop()  # the previous char is optional/repeated
            break
        out.append(ch)
    return "".join(out)


class _Pat(NamedTuple):
    rx: "re.Pattern[str]"
    needle: str                               # literal prefix of rx
    before: Optional[Callable[[str, int], bool]]  # context test on the words before the hit
    after: Optional["re.Pattern[str]"]        # must match right after the hit
    word_start: bool                          # the hit must start a word


def _pat(src: str, before: Optional[Callable[[str, int], bool]] = None,
         after: Optional[str] = None, word_start: bool = True) -> _Pat:
    needle = _literal_prefix(src)
    assert needle, src  # every pattern must start with a literal
    return _Pat(re.compile(src), needle, before, re.compile(after) if after else None, word_start)


# ---------------------------------------------------------------------------
# Context checks on the few words before a hit (much faster than an
# end-anchored regex search over a window)
# ---------------------------------------------------------------------------

_PUNCT = ".!?,;:\n(-\"*>"


def _prev_words(t: str, s: int, n: int = 6) -> list:
    """Up to ``n`` words before position ``s`` (quotes/brackets stripped)."""
    return [w.strip("\"'()*") for w in t[max(0, s - 60):s].split()[-n:]]


def _clause_start(t: str, s: int) -> bool:
    """Nothing but whitespace since the start of the text or of a clause."""
    w = t[max(0, s - 60):s].rstrip(" \t")
    return not w or w[-1] in _PUNCT


# A first-person subject before the modal: "I", "I'm really", "we're",
# "I'm <something> and", or nothing at the start of a
# clause ("Sorry, can't help with that", "Nope, not going to ...").
_SUBJECTS = frozenset({"i", "we", "i'm", "we're", "i'll", "we'll", "i'd", "we'd", "im", "ill",
                       "sorry", "sorry,", "nope", "nope,", "no", "no,"})
_SUBJ_MODIFIERS = frozenset({"am", "are", "is", "was", "were", "will", "would", "really", "just",
                             "simply", "truly", "honestly", "also", "still", "do", "must",
                             "unfortunately", "currently", "personally"})


def _subject_before(t: str, s: int) -> bool:
    if _clause_start(t, s):
        return True
    words = _prev_words(t, s, 10)
    i = len(words) - 1
    while i >= 0 and words[i] in _SUBJ_MODIFIERS:
        i -= 1
    if i < 0:
        return False
    w = words[i]
    if w in _SUBJECTS:
        return True
    # "I'm a text-based AI and can't help", "I'm not a lawyer and can't advise"
    return w == "and" and any(x in ("i'm", "i", "we're", "we") for x in words[:i])


_INTENT_WORDS = frozenset({"have", "to", "need", "going", "must", "respectfully", "will",
                           "am", "'ll", "just", "politely", "therefore", "so"})


def _first_person_before(t: str, s: int) -> bool:
    """'I must (respectfully) decline', "I'll have to pass", "I'm going to hold off"."""
    words = _prev_words(t, s, 6)
    i = len(words) - 1
    while i >= 0 and words[i] in _INTENT_WORDS:
        i -= 1
    return i >= 0 and words[i] in ("i", "we", "i'll", "we'll", "i'm", "we're", "i'd")


def _i_before(t: str, s: int) -> bool:
    w = _prev_words(t, s, 2)
    return bool(w) and (w[-1] == "i" or w[-2:] in (["i", "really"], ["i", "just"]))


def _would_before(t: str, s: int) -> bool:
    """'would/might/may violate', 'would potentially violate'."""
    w = _prev_words(t, s, 2)
    return bool(w) and bool({"would", "might", "may", "could", "will", "likely"} & set(w))


def _copula_before(t: str, s: int) -> bool:
    """"that's against", 'is against', 'goes against', 'be against'."""
    w = _prev_words(t, s, 2)
    return bool(w) and w[-1] in ("that's", "it's", "is", "be", "goes", "go", "was", "this's")


def _negation_other_before(t: str, s: int) -> bool:
    """Portuguese/Italian 'não posso ajudar', 'non posso aiutare'."""
    w = _prev_words(t, s, 1)
    return bool(w) and w[-1] in ("não", "nao", "non")


def _only_before(t: str, s: int) -> bool:
    """'I can only' / "I'm only" / 'I am only'."""
    w = _prev_words(t, s, 2)
    return bool(w) and (w[-1] == "i'm" or w[-2:] in (["i", "can"], ["i", "am"]))


def _negation_before(t: str, s: int) -> bool:
    """'not be appropriate', "wouldn't be right"."""
    w = _prev_words(t, s, 1)
    return bool(w) and (w[-1] == "not" or w[-1].endswith("n't"))


def _dont_before(t: str, s: int) -> bool:
    """"don't think I should", 'do not think'."""
    w = _prev_words(t, s, 2)
    return bool(w) and (w[-1] in ("don't", "dont") or w[-2:] == ["do", "not"])


def _be_before(t: str, s: int) -> bool:
    w = _prev_words(t, s, 1)
    return bool(w) and w[-1] in ("be", "is")


# Who leads into a redirect: "please contact", "I'd recommend talking to",
# "you should see", "consider speaking with".
_LEAD_WORDS = frozenset({"please", "i'd", "i", "you'll", "you'd", "consider", "recommend",
                         "suggest", "encourage", "best"})
_YOU_MODALS = frozenset({"should", "need", "may", "might", "will"})


def _redirect_lead_before(t: str, s: int) -> bool:
    words = _prev_words(t, s, 5)
    for i, w in enumerate(words):
        if w in _LEAD_WORDS:
            return True
        if (w == "you" or w == "them") and i + 1 < len(words) and words[i + 1] in _YOU_MODALS:
            return True
        if w == "ask" and i + 1 < len(words) and words[i + 1] == "them":
            return True
    return False


# ---------------------------------------------------------------------------
# Pattern pieces
# ---------------------------------------------------------------------------

# DECLINE = a declining modal, then harmless words and an action verb
# ("I can't help", "I'm unable to provide", "won't be able to assist").
# Harmless words between the modal and the verb, then the verb. The verb list
# is a whitelist on purpose: "can't find / reproduce / attend / see" are not
# declines.
_VERB = (
    r"(?:\s+to)?(?:\s*,?\s*(?:really|actually|in\s+good\s+conscience|personally|directly|currently"
    r"|unfortunately|,|and\s+will\s+not|and\s+won'?t|or\s+won'?t|physically|simply|just"
    r"|be\s+able\s+to|be|help\s+(?:you\s+)?)){0,3}\s*"
    r"(?:help|assist|aid|provide|providing|supply|do|doing|comply|fulfil{1,2}|write|writing"
    r"|create|creating|generate|generating|produce|share|sharing|give|giving|offer|support"
    r"|make(?!\s+(?:it|this|that)\s+(?:work|run|compile))"  # not "can't make it work on py2"
    r"|complete|continue|proceed|process|answer|respond|discuss|engage|disclose|reveal|tell"
    r"|issue|change|modify|alter|cancel|reverse|refund|waive|override|access|look\s+up|reset"
    r"|execute|run|perform|participate|condone|advise|diagnose|predict|speculate|guess|draft"
    r"|compose|build|develop|code|describe|walk|teach|show|move|transfer|delete|send|read"
    r"|handle|grant|recommend|encourage|endorse|facilitate|enable|carry\s+out|accommodate"
    r"|release|retrieve|get\s+around|bypass|circumvent|go\s+(?:there|along|ahead)|let\s+you"
    r"|play\s+along|pretend|roleplay|role-play|impersonate|check\s+on|explain\s+how\s+to"
    r"|contribute|work\s+on|put\s+together|come\s+up\s+with|find\s+a\s+way|take\s+care\s+of"
    r"|look\s+into|deal\s+with|go\s+into\s+(?:that|this|it|those|these|details)|arrange|approve"
    r"|authori[sz]e|research|compile|investigate|search|book|schedule|unlock|expedite|ship"
    r"|make\s+purchases|browse|with\s+(?:that|this|it)|helping|assisting|craft|crafting|go\s+along"
    r"|include|including|put|fabricate|invent|install|help\s+craft"
    r"|reproduce\s+(?:the\s+)?(?:full\s+|complete\s+|entire\s+)?(?:lyrics|text|article|book|song"
    r"|chapter|script|poem))\b"
)
_MODALS = (
    r"can(?:'?t|not|\s+not)\b", r"won'?t\b", r"will\s+not\b",
    r"could(?:n'?t|\s+not)\b", r"should(?:n'?t|\s+not)\b",
    r"must\s+not\b", r"may\s+not\b", r"unable\s+to\b",
    r"not\s+(?:really\s+|quite\s+)?(?:(?:able|going|allowed|permitted|authori[sz]ed|qualified|in\s+a\s+position"
    r"|comfortable|willing|designed|programmed)\s+to|feel\s+comfortable|comfortable)\b",
    r"don'?t\s+feel\s+comfortable\b",
    r"rather\s+not\b", r"prefer\s+not\b", r"refuse\s+to\b", r"decline\s+to\b",
)

_PRO = (
    r"(?:doctor|physician|gp|lawyer|attorney|solicitor|legal\s+aid|professional|advisor|adviser"
    r"|planner|accountant|cpa|pharmacist|therapist|counsel+or|psychologist|psychiatrist|vet"
    r"|veterinarian|dermatologist|specialist|support|customer\s+service|billing|bank|human|agent"
    r"|team|representative|provider|crisis|hotline|lifeline|emergency|988|911|expert|authorities"
    r"|police|department|help\s*desk|administrator|admin)\b"
)
_TO_PRO = r"(?:[\w'@.-]+\s+){0,5}?" + _PRO
# "contact your bank IF you don't recognise a charge" is advice, not a redirect.
_NOT_CONDITIONAL = r"(?![^.!?\n]{0,25}?\b(?:if|when|whenever|in\s+case|once)\b)"
# "(not) something I can / I'm able to / I'll ..." (not "something I'd worry about").
_THING_I_CAN = (
    r"(?:something|a\s+request|anything|a\s+task|a\s+thing)\s+(?:that\s+)?i(?:'m|\s+am|'ll|'d)?\s*"
    r"(?:can|could|will|would|able|allowed|permitted|feel|should|have\s+to|do|comfortable|going"
    r"|help|'ll|'m\s+(?:able|allowed|comfortable|going|willing))\b"
)
# Verbs an assistant says it habitually does not do ("I don't provide ...").
_HABIT_VERB = (
    r"(?:provide|generate|create|write|produce|engage\s+in|share|offer|give|assist\s+with"
    r"|help\s+with|make|do\s+(?:that|this))\b"
)
_POLICY_NOUN = (
    r"\s+(?:\w+'?s?\s+){0,3}?(?:guidelines|polic(?:y|ies)|terms(?:\s+of\s+(?:service|use))?"
    r"|principles|rules)"
)


def _redirect(verb: str) -> _Pat:
    """'<lead> <verb> <up to 5 words> <professional>', not followed by a condition."""
    return _pat(verb + _TO_PRO, before=_redirect_lead_before, after=_NOT_CONDITIONAL)


class _Group(NamedTuple):
    name: str
    family: str                      # independent kinds of evidence add up
    needles: Optional[Tuple[str, ...]]  # cheap gate for the whole group (None: always)
    pats: Tuple[_Pat, ...]
    weights: Tuple[float, float, float]  # (lead, middle, tail)


_GROUPS = (
    # The core signal: "I can't help", "I'm not able to provide".
    _Group("decline", "decline", None,
           tuple(_pat(m, before=_subject_before, after=_VERB) for m in _MODALS)
           # "I wouldn't do that in production" is advice; "I wouldn't be able
           # to help" / "would not feel comfortable" is a decline.
           + (_pat(r"would(?:n'?t|\s+not)\s+(?:be\s+able\s+to|feel\s+comfortable|be\s+comfortable"
                   r"|want\s+to)", before=_subject_before, after=_VERB),),
           (5.2, 3.4, 5.0)),
    # "not something I can do", "isn't a request I can fulfil".
    _Group("not_something", "decline", ("thing", "request", "task"), (
        _pat(r"not\s+" + _THING_I_CAN),
        _pat(r"n't\s+" + _THING_I_CAN, word_start=False),
    ), (5.2, 2.6, 5.0)),
    # "I must decline", "I'll have to pass", "I'm going to hold off",
    # "a request I have to turn down". Anchored on the verb; a first-person
    # subject must come before it.
    _Group("decline_verb", "decline",
           ("declin", "refus", "pass", "hold off", "turn ", "say no", " out", "don", "do not"), (
        _pat(r"decline\b", before=_first_person_before),
        _pat(r"refuse\b", before=_first_person_before),
        _pat(r"pass\b", before=_first_person_before, after=r"\s+on\b|\s*[.,!;]|\s*$"),
        _pat(r"hold\s+off\b", before=_first_person_before),
        _pat(r"turn\s+(?:(?:this|that|it)\s+)?down\b", before=_first_person_before),
        _pat(r"say\s+no\b", before=_first_person_before),
        _pat(r"sit\s+(?:this|that)\s+(?:one\s+)?out\b", before=_first_person_before),
        # habitual first person: "I don't provide medical diagnoses"
        _pat(r"don'?t\s+" + _HABIT_VERB, before=_i_before),
        _pat(r"do\s+not\s+" + _HABIT_VERB, before=_i_before),
    ), (5.2, 2.6, 5.0)),
    # Scope limits of a narrow assistant: "outside my scope",
    # "I can only help with orders".
    _Group("scope", "decline", ("outside", "beyond", "only"), (
        _pat(r"outside\s+(?:of\s+)?(?:(?:my|the)\s+(?:scope|capabilit|remit|abilit)"
             r"|what\s+i(?:'m|\s+am)?\s+(?:can|able|allowed|permitted|authori[sz]ed))"),
        _pat(r"beyond\s+(?:(?:my|the)\s+(?:scope|capabilit|remit|abilit)"
             r"|what\s+i(?:'m|\s+am)?\s+(?:can|able|allowed))"),
        _pat(r"only\s+(?:able\s+to\s+)?(?:help|assist|answer|discuss|support)\b",
             before=_only_before),
    ), (4.2, 2.0, 3.6)),
    # "It wouldn't be appropriate/right for me to", "I don't think I should".
    _Group("not_appropriate", "decline", ("for me", "think"), (
        _pat(r"be\s+(?:appropriate|right|ethical|responsible)\s+for\s+me\b",
             before=_negation_before),
        _pat(r"not\s+(?:appropriate|ethical|right)\s+for\s+me\s+to\b"),
        _pat(r"think\s+(?:i\s+(?:can|should)|it\s+would\s+be\s+appropriate)\b",
             before=_dont_before),
    ), (4.6, 2.2, 4.2)),
    # "Our policy doesn't allow me to share that", "I'm not allowed to".
    _Group("not_allowed", "decline", ("allow me", "permit me"), (
        _pat(r"doesn'?t\s+(?:allow|permit)\s+me\s+to\b"),
        _pat(r"does\s+not\s+(?:allow|permit)\s+me\s+to\b"),
        _pat(r"don'?t\s+(?:allow|permit)\s+me\s+to\b"),
        _pat(r"do\s+not\s+(?:allow|permit)\s+me\s+to\b"),
    ), (5.2, 2.6, 5.0)),
    # A few stock declines in other languages (the rest of this module is
    # English-only): "Lo siento, no puedo ayudar con eso", "Das kann ich
    # leider nicht tun", "Je ne peux pas vous aider".
    _Group("decline_other_language", "decline", ("puedo", "kann", "peux", "posso"), (
        _pat(r"no\s+puedo\s+(?:ayudar|hacer\s+eso|proporcionar|asistir)"),
        _pat(r"kann\s+ich\s+(?:leider\s+)?nicht\s+(?:tun|helfen|machen)"),
        _pat(r"kann\s+(?:ihnen\s+|dir\s+)?(?:dabei\s+)?(?:leider\s+)?nicht\s+helfen"),
        _pat(r"ne\s+peux\s+pas\s+(?:vous\s+|t'|te\s+)?(?:aider|faire|fournir)"),
        _pat(r"posso\s+(?:ajudar|aiutar)", before=_negation_other_before),
    ), (5.2, 2.6, 5.0)),
    # Conversational stop signs.
    _Group("stop_sign", "decline", ("stop", "go there", "can do"), (
        _pat(r"no\s+can\s+do\b"),
        _pat(r"let\s+me\s+stop\s+you"),
        _pat(r"let'?s\s+not\s+go\s+there"),
        _pat(r"i'll\s+need\s+to\s+stop\s+here"),
    ), (4.6, 2.2, 4.2)),
    # Agent / API-wrapper phrasing: "Action declined", "request was flagged".
    _Group("agent_decline", "decline", ("declined", "aborted", "request", " and w"), (
        _pat(r"action\s+declined"),
        _pat(r"task\s+aborted"),
        _pat(r"declined\s+to\s+respond"),
        _pat(r"request\s+(?:(?:was\s+|has\s+been\s+)?(?:denied|refused|rejected|blocked|flagged)"
             r"|(?:can'?t|cannot)\s+be\s+(?:completed|fulfilled|processed|carried\s+out))"),
        _pat(r"can(?:not|'?t)\s+and\s+(?:will\s+not|won'?t)"),
    ), (4.2, 2.0, 3.6)),
    # The part of a long answer that declines: "What I can't do is ...", "The part I can't help
    # with is ...", "I'll skip this one", "I won't." at a clause end, "Declining tool call".
    _Group("declined_part", "decline",
           ("what i", "part i", "skip", "won", "declin", "prevent", "let me", "different topic",
            "good idea", "go along", "comfortable"), (
        _pat(r"what\s+i\s+(?:can'?t|cannot|won'?t|will\s+not|am\s+not\s+able\s+to|'m\s+not\s+able\s+to)"
             r"\s+(?:do|help\s+with|provide|write|give|offer)\b"),
        _pat(r"part\s+i\s+(?:can'?t|cannot|won'?t)\s+(?:help\s+with|do|write|provide|assist\s+with)\b"),
        _pat(r"thing\s+i\s+(?:can'?t|cannot|won'?t)\s+(?:help\s+with|do|write|provide|assist\s+with)\b"),
        _pat(r"skip\s+(?:this|that)\s+one\b", before=_first_person_before),
        _pat(r"won'?t\b", before=_subject_before, after=r"\s*(?:[-.;!]|$)"),
        _pat(r"declining\s+(?:the\s+|this\s+|that\s+|your\s+)?(?:tool\s+call|request|action|call"
             r"|to\s+)"),
        _pat(r"prevents?\s+me\s+from\b"),
        _pat(r"doesn'?t\s+let\s+me\b"), _pat(r"does\s+not\s+let\s+me\b"),
        _pat(r"let'?s\s+try\s+a\s+different\s+topic"),
        _pat(r"not\s+(?:a\s+good\s+idea|appropriate|right)\s+for\s+me\s+to\b"),
        _pat(r"don'?t\s+think\s+(?:that'?s|it'?s|it\s+would\s+be)\s+(?:a\s+good\s+idea|appropriate)"
             r"\s+for\s+me\b"),
    ), (5.2, 3.4, 5.0)),
    # Stock declines in other languages: German, French, Spanish, Portuguese, Italian, Japanese.
    _Group("decline_other_language_2", "decline",
           ("nicht", "keine", "mesure", "puis", "peux", "pouvons", "puedo", "podemos", "consigo",
            "posso", "できません", "かねます", "できかね", "お断り"), (
        _pat(r"kann\s+ich\s+(?:ihnen\s+|dir\s+|euch\s+)?(?:leider\s+)?nicht\b"),
        _pat(r"kann\s+(?:ihnen\s+|dir\s+)?(?:leider\s+)?(?:keine|nicht)\b",
             before=lambda t, s: "ich" in _prev_words(t, s, 4)),
        _pat(r"darf\s+ich\s+(?:leider\s+)?nicht\b"),
        _pat(r"ne\s+(?:suis|sommes)\s+pas\s+en\s+mesure\b"),
        _pat(r"ne\s+(?:puis|peux|pouvons)\s+pas\b"),
        _pat(r"no\s+(?:puedo|podemos)\s+\w+"),
        _pat(r"solo\s+puedo\s+ayudar"),
        _pat(r"não\s+(?:consigo|posso|podemos)\s+\w+"), _pat(r"nao\s+(?:consigo|posso|podemos)\s+\w+"),
        _pat(r"non\s+posso\s+\w+"),
        # Japanese has no word boundaries: these match anywhere ("お答えできません" ends in できません).
        *(_pat(j, word_start=False) for j in ("できません", "いたしかねます", "致しかねます", "できかねます",
                                              "お断り")),
    ), (5.2, 3.4, 5.0)),
    # Policy, safety, guidelines or ethics given as the reason. Strong form:
    # the request itself would break the rules ("that would violate my
    # guidelines", "this might violate our usage policies", "that's against
    # the rules I operate under").
    _Group("policy_block", "policy", ("violat", "against"), (
        _pat(r"violat\w*" + _POLICY_NOUN, before=_would_before),
        _pat(r"against" + _POLICY_NOUN, before=_copula_before),
    ), (4.2, 2.0, 3.6)),
    # Weak form: policy vocabulary that usually accompanies a decline ("for
    # safety reasons", "due to our content policy", "against our usage
    # policies"). Plain policy *explanations* ("our refund policy allows ...")
    # do not match; "content that violates the guidelines is removed" matches
    # but is too weak on its own.
    _Group("policy", "policy",
           ("polic", "guideline", "terms", "principle", "rules", "reasons", "concerns", "unethical",
            "allowed to", "permitted to"), (
        _pat(r"violat\w*" + _POLICY_NOUN),
        _pat(r"against" + _POLICY_NOUN),
        _pat(r"conflicts?\s+with" + _POLICY_NOUN),
        _pat(r"breach(?:es)?(?:\s+of)?" + _POLICY_NOUN),
        _pat(r"not\s+(?:permitted|allowed)\s+(?:under" + _POLICY_NOUN
             + r"|to\s+(?:create|share|discuss|provide|generate))"),
        _pat(r"for\s+(?:safety|security|legal|ethical|privacy)\s+(?:reasons|concerns)"),
        _pat(r"due\s+to\s+(?:(?:safety|security|legal|ethical|privacy)\s+(?:reasons|concerns)"
             r"|(?:our\s+|my\s+|the\s+)?(?:safety|content|usage)\s+polic)"),
        _pat(r"per\s+(?:company\s+|our\s+)?policy,\s+i\b"),
        _pat(r"unethical", before=_be_before),
    ), (2.4, 1.4, 2.4)),
    # "As an AI (language model), I ..." disclaims agency; weak alone because
    # it also prefaces answers ("As an AI I don't have opinions, but ...").
    _Group("as_an_ai", "as_an_ai", ("as a", " ai", "model"), (
        _pat(r"as\s+an?\s+(?:ai|artificial\s+intelligence|(?:large\s+)?language\s+model|llm"
             r"|ai\s+(?:language\s+model|assistant|model|chatbot)|virtual\s+assistant"
             r"|text-based\s+ai|chatbot)\b"),
        _pat(r"i(?:'m|\s+am)\s+(?:just\s+|only\s+)?(?:an\s+ai|a\s+(?:large\s+)?language\s+model"
             r"|a\s+text-based\s+ai)\b"),
    ), (1.8, 0.9, 1.4)),
    # "I don't have the ability / access / permission to ...".
    _Group("capability", "capability", ("have",), (
        _pat(r"i\s+(?:do\s+not|don'?t)\s+have\s+(?:the\s+)?(?:ability|capability|capacity|access"
             r"|permission|authority|means|tools?)\b"),
    ), (3.2, 1.2, 2.6)),
    # Sends the user to a professional or to support instead of answering.
    _Group("redirect", "redirect",
           ("consult", "contact", "speak", "talk", "reach", "seek", "see", "call", "touch",
            "discuss", "ticket", "rather than", "instead of", "better placed"), (
        _redirect(r"consult(?:ing)?\s+"),
        _redirect(r"contact(?:ing)?\s+"),
        _redirect(r"speak(?:ing)?\s+(?:with|to)\s+"),
        _redirect(r"talk(?:ing)?\s+(?:to|with)\s+"),
        _redirect(r"reach(?:ing)?\s+out\s+to\s+"),
        _redirect(r"seek(?:ing)?\s+"),
        _redirect(r"see(?:ing)?\s+"),
        _redirect(r"call(?:ing)?\s+"),
        _redirect(r"get\s+in\s+touch\s+with\s+"),
        _redirect(r"discuss\s+(?:this|it)\s+with\s+"),
        _pat(r"open\s+a\s+(?:support\s+)?ticket"),
        _pat(r"rather\s+than\s+(?:relying\s+on\s+)?(?:me|an\s+ai)\b"),
        _pat(r"instead\s+of\s+(?:relying\s+on\s+)?(?:me|an\s+ai)\b"),
        _pat(r"better\s+placed\s+to\s+help"),
    ), (3.8, 1.6, 3.4)),
)

# APOLOGY_OPENER: "I'm sorry, but" / "Unfortunately," at the very start. Not
# "sorry for the delay", "sorry to hear", "sorry about that".
_APOLOGY = re.compile(
    r"(?:(?:i'm|i\s+am)\s+(?:so\s+|very\s+|really\s+|truly\s+)?sorry|sorry|i\s+apologi[sz]e"
    r"|apologies|my\s+apologies|unfortunately|regrettably|i'm\s+afraid|i\s+regret)"
    r"(?!\s+(?:for|to\s+hear|about|if|that\s+(?:you|your|i)|you're|you\s+are))"
)
# "I understand ..., but/however" in the lead: an empathetic run-up to a "no".
_PIVOT_WORDS = ("but ", "but,", "however", "though", "that said", "unfortunately")

# ---------------------------------------------------------------------------
# Counter-evidence: the response complies
# ---------------------------------------------------------------------------

# Idioms that look like declines: "I can't stress enough", "can't wait".
_IDIOM = re.compile(
    r"(?:can'?t|cannot|couldn'?t)\s+(?:(?:\w+\s+){0,6}?enough"
    r"|wait|believe|thank|agree\s+more|go\s+wrong|imagine"
    r"|stress|emphasi[sz]e|overstate|guarantee|promise|say\s+for\s+(?:sure|certain)"
    r"|be\s+(?:sure|certain)|help\s+(?:but|thinking|noticing|feeling|wondering)"
    r"|tell\s+you\s+how\s+(?:many\s+times|much\s+(?:i|we|it\s+means)|often\s+(?:i|we)|happy|glad"
    r"|grateful|excited|thankful|sorry))"
)
# Quoted speech: a refusal inside quotes is reported, not performed
# ('The character says, "I can't let you in"'). A quote opening the whole
# response is not skipped. Single quotes must open after a space/bracket so
# that apostrophes ("you're", "others'") do not open a quote.
_DQUOTED = re.compile(r"\"[^\"\n]{3,400}\"|\u00ab[^\u00bb\n]{3,400}\u00bb")
_SQUOTE_OPENERS = (" '", "('", ":'", "\n'")
_SQUOTED = re.compile(r"'(?=\S)[^\n]{3,400}?'(?=[\s,.;:!?)]|$)")  # matched at an opener
# Code and numbered/bulleted steps are answers.
_INLINE_CODE = re.compile(r"`[^`\n]{2,}`")
_STEPS = re.compile(r"\n\s*(?:\d+[.)]|[-*\u2022]|step\s+\d+)\s+\S")
# Compliant openers.
_COMPLY_OPEN = re.compile(
    r"(?:sure|certainly|of\s+course|absolutely|happy\s+to|glad\s+to|no\s+problem"
    r"|great\s+(?:question|choice)|good\s+(?:news|catch|question)|got\s+it|done|ok(?:ay)?|yes|yep"
    r"|here(?:'s|\s+is|\s+are)|step\s+1|short\s+answer|in\s+short)\b"
)
# "here's the fix", "here are three ideas" (not "here's why I can't").
_HERE_IS = re.compile(r"(?<![a-z])here(?:'s|\s+is|\s+are)\s+(?!why|what\s+i|the\s+thing)")
# Actions reported as done: "I've issued a replacement", "I went ahead and".
_DONE_VERBS = (
    r"\s+(?:just\s+|now\s+|also\s+|already\s+|successfully\s+)?"
    r"(?:processed|updated|issued|applied|reset|upgraded|reversed|created|added|sent|scheduled"
    r"|cancel+ed|rebooked|transferred|renamed|written|pushed|changed|fixed|moved|submitted|booked"
    r"|refunded|credited|removed|deleted|enabled|disabled)\b"
)
_DONE = (
    re.compile(r"i(?:'ve|\s+have)" + _DONE_VERBS),
    re.compile(r"we(?:'ve|\s+have)" + _DONE_VERBS),
    re.compile(r"went\s+ahead\s+and"),
)
# Hedge then answer: ", but <substance>" where the part after the pivot is an
# answer, not an offer ("but I can help you with X instead" stays a refusal)
# and not a restated decline.
_BUT_WORDS = ("but", "however", "that said", "in the meantime")
_BUT_REST = re.compile(
    r"\b,?\s+"
    r"(?!(?:i|we)(?:'d|'m|'ll|\s+would|\s+can|\s+could|\s+am|\s+will)?\s+(?:be\s+)?"
    r"(?:happy|glad|able|help|suggest|recommend|offer|assist|write|can\s+help|can\s+offer"
    r"|can\s+suggest|can\s+assist|could\s+help|still|want|care|understand|hope|really|do\s+want"
    r"|am\s+here|'m\s+here)"
    r"|if\s+you|feel\s+free|please|maybe|perhaps|what\s+i|i\s+(?:can'?t|cannot|won'?t|will\s+not"
    r"|'m\s+not|am\s+not|must|have\s+to|need\s+to|don'?t|do\s+not|still)|it'?s\s+not|that'?s\s+not"
    r"|this\s+(?:is|isn'?t)|i'?m\s+(?:not|unable|going)|(?:i\s+)?(?:can'?t|cannot|won'?t)|given"
    r"|with\s+respect|since|because|unfortunately|creating|writing|helping|providing|generating"
    r"|stripping|converting|making|doing|sharing|you\s+(?:should|may|might|could|need|will|'ll)"
    r"|(?:do|don'?t)\s+)"
    r"[^.!?\n]{12,}"
)
# Concessive hedge: "While I can't browse the web, I can explain ...".
# (matched right after the words while / though / whilst, found with str.find)
_CONCESSIVE_WORDS = ("while", "though", "whilst")
_CONCESSIVE = re.compile(r"\s+i(?:'m|\s+am)?\s+(?:can'?t|cannot|don'?t|do\s+not|not\s+able|unable)")
# Caveats that preface an answer: "I'm not a doctor, but ...".
_NOT_A_PRO = re.compile(
    r"not\s+(?:(?:a|an)\s+(?:\w+\s+)?(?:doctor|lawyer|attorney|physician|professional|expert"
    r"|accountant|advisor|adviser|therapist)\b[^.!?\n]{0,40}?\bbut\b"
    r"|(?:financial|legal|medical)\s+advice)"
)

_W_APOLOGY = 1.4           # apology opener: adds to a decline, weak alone
_W_PIVOT = 0.6             # "I understand ..., but" in the lead, with a decline
_W_EXTRA_FAMILY = 1.0      # each further independent kind of decline evidence (max 2)
_W_CODE_FENCE = -4.5
_W_INLINE_CODE = -1.0
_W_STEP = -1.5             # per step line, from 2 lines on, capped
_W_STEPS_CAP = -4.0
_W_COMPLY_OPEN = -2.5
_W_HERE_IS = -1.5
_W_DONE = -2.2
_W_HEDGE_THEN_ANSWER = -4.5
_W_CONCESSIVE = -4.0
_W_NOT_A_PRO = -1.2
_TAIL_DAMPING = 0.3        # soft compliance signals count less when the last sentence declines


def _squash(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _word_start(t: str, s: int) -> bool:
    """True if ``s`` starts a word (patterns skip a leading \\b for speed)."""
    return s == 0 or not t[s].isalnum() or not (t[s - 1].isalnum() or t[s - 1] == "'")


def _sentence_starts(t: str) -> list:
    """Offsets where each sentence starts (the first is 0)."""
    n = len(t)
    return [0] + [e for e in (m.end() for m in _SENT_END.finditer(t))
                  if e < n and t[e - 1].isspace()]


def _position(starts: list, s: int) -> int:
    """0 = lead (first two sentences), 1 = middle, 2 = tail (last sentence)."""
    if len(starts) < 3 or s < starts[2]:
        return 0
    return 2 if s >= starts[-1] else 1


# Flattened for the hot loop: (group needles, ((needle, rx, before, after, word_start), ...), group)
_FLAT = tuple(
    (g.needles, tuple((p.needle, p.rx, p.before, p.after, p.word_start) for p in g.pats), g)
    for g in _GROUPS
)


def _hits(t: str) -> list:
    """(group, start, end) for every decline-evidence pattern hit."""
    out = []
    for needles, pats, g in _FLAT:
        if needles is not None:
            for n in needles:
                if n in t:
                    break
            else:
                continue
        for needle, rx, before, after, word_start in pats:
            if needle not in t:
                continue
            for m in rx.finditer(t):
                s, e = m.span()
                if word_start and s and t[s - 1].isalnum():
                    continue
                if after is not None:
                    a = after.match(t, e)
                    if a is None:
                        continue
                    e = a.end()
                if before is not None and not before(t, s):
                    continue
                out.append((g, s, e))
    return out


def _features(t: str) -> dict:
    """Return {feature_name: logit contribution} for normalised text ``t``."""
    feats: dict = {}

    hits = _hits(t)
    tail_decline = False
    if hits:
        # Spans where an apparent decline is an idiom, a caveat, or quoted.
        skip = []
        if "can" in t or "couldn" in t:
            skip += [m.span() for m in _IDIOM.finditer(t)]
        if '"' in t or "\u00ab" in t:
            skip += [m.span() for m in _DQUOTED.finditer(t) if m.start() > 0]
        for q in _SQUOTE_OPENERS:
            i = t.find(q)
            while i >= 0:
                m = _SQUOTED.match(t, i + len(q) - 1)
                if m:
                    skip.append(m.span())
                i = t.find(q, i + 1)
        concessive = []
        for w in _CONCESSIVE_WORDS:
            i = t.find(w)
            while i >= 0:
                m = _CONCESSIVE.match(t, i + len(w))
                if m and (i == 0 or not t[i - 1].isalnum() or t[i - 2:i] == "al"):
                    concessive.append(m.end())
                i = t.find(w, i + 1)
        if concessive:
            feats["concessive"] = _W_CONCESSIVE

        starts = _sentence_starts(t)
        best: dict = {}          # family -> (weight, group name)
        last_end = -1
        for g, s, e in hits:
            if any(a <= s < b or a < e <= b for a, b in skip):
                continue  # "I can't stress enough", 'she said "I can't help"'
            if any(s - 3 <= c <= e + 2 for c in concessive):
                continue  # "while I can't browse ..." is a caveat
            pos = _position(starts, s)
            w = g.weights[pos]
            if pos == 2 and g.family == "decline":
                tail_decline = True
            if w > best.get(g.family, (0.0, ""))[0]:
                best[g.family] = (w, g.name)
            if e > last_end:
                last_end = e
        for w, name in best.values():
            feats[name] = w
        if len(best) > 1:
            feats["extra_evidence"] = _W_EXTRA_FAMILY * min(len(best) - 1, 2)

        if best:
            if _APOLOGY.match(t):
                feats["apology_opener"] = _W_APOLOGY
            else:
                # "I understand ..., but" within the first two sentences
                lead = t[:starts[2]] if len(starts) > 2 else t
                if len(starts) > 1 and any(w in lead for w in _PIVOT_WORDS):
                    feats["pivot"] = _W_PIVOT

            # ", but <answer>" after the last decline signal: the decline was a
            # hedge, then it answered.
            for w in _BUT_WORDS:
                i = t.find(w, max(0, last_end - 1))
                while i >= 0:
                    if _word_start(t, i) and _BUT_REST.match(t, i + len(w)):
                        feats["hedge_then_answer"] = _W_HEDGE_THEN_ANSWER
                        break
                    i = t.find(w, i + 1)
                if "hedge_then_answer" in feats:
                    break
            if ("not a" in t or "advice" in t) and _NOT_A_PRO.search(t):
                feats["not_a_pro_caveat"] = _W_NOT_A_PRO

    # ---- compliance counter-evidence (cheap substring tests first)
    if "```" in t or "~~~" in t:
        feats["code_fence"] = _W_CODE_FENCE
    elif "`" in t and _INLINE_CODE.search(t):
        feats["inline_code"] = _W_INLINE_CODE
    if "\n" in t:
        n_steps = len(_STEPS.findall(t))
        if n_steps >= 2:
            feats["steps"] = max(_W_STEP * n_steps, _W_STEPS_CAP)
    if _COMPLY_OPEN.match(t):
        feats["comply_opener"] = _W_COMPLY_OPEN
    if "here" in t and _HERE_IS.search(t):
        feats["here_is"] = _W_HERE_IS
    if "ve " in t or "have " in t or "went " in t:
        for rx in _DONE:
            if rx.search(t):
                feats["done_action"] = _W_DONE
                break

    if tail_decline:
        # A decline in the last sentence is the verdict of a partial refusal:
        # the content before it ("Here is some background ...") is not
        # compliance.
        for k in ("comply_opener", "here_is", "steps", "inline_code"):
            if k in feats:
                feats[k] *= _TAIL_DAMPING
    return feats


def explain(text: str) -> dict:
    """Feature contributions (logit units) for ``text``; for debugging and tuning."""
    if not isinstance(text, str) or not text or text.isspace():
        return {}
    return _features(_prepare(text))


def score(text: str) -> float:
    """Probability-like score in [0, 1] that ``text`` declines the user's request.

    Empty or non-string input scores 0.0. Never raises.
    """
    if not isinstance(text, str) or not text or text.isspace():
        return 0.0
    try:
        feats = _features(_prepare(text))
    except Exception:  # a classifier bug must not take down a stream worker
        return 0.0
    return _squash(_BIAS + sum(feats.values()))


def is_refusal(text: str, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """True when ``score(text) >= threshold``."""
    return score(text) >= threshold
