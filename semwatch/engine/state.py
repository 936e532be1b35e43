"""Plain-data state classes: slotted dataclasses, each registered under a stable tag with a schema.

Every piece of detector state (a segment's windows, a run's totals, a baseline) is a dataclass
declared with ``@dataclass(slots=True)`` on top of :class:`PlainState` and registered with
``@state_type("<tag>")`` above the ``@dataclass`` line. Slots save the per-object ``__dict__``
(roughly a third of the engine's memory per active segment).

The tag is what names the class in a changelog record (:mod:`semwatch.engine.state_format`). It is
a word chosen once and kept, never a Python import path: a decoder only looks tags up in
:data:`STATE_TYPES`, so a record can neither import a module nor name a class that was not
registered, and moving a class to another module does not orphan its records. ``version`` goes up
when a field changes meaning (a field that is only added or removed needs no new version: records
without it get its default, and fields a release does not know are ignored).

The schema of a class is derived from its dataclass fields and their annotations: every field must
be plain data (numbers, strings, booleans, None, lists, dicts with str or int keys, tuples,
``array('d')``, other registered state classes), and a decoded value must match its field's type.

>>> from semwatch.engine.lifecycle import Lifecycle
>>> STATE_TYPES["lifecycle"] is Lifecycle, tag_of(Lifecycle)
(True, 'lifecycle')
>>> schema = schema_of(Lifecycle)
>>> schema.fields[:3], schema.check("peak", 0.4), schema.check("peak", "0.4")
(('status', 'since', 'fired_at'), True, False)
>>> old = Lifecycle.__new__(Lifecycle); old.__setstate__({"status": "pending"})  # an old pickle
>>> (old.status, old.severity, old.peak)  # fields it lacks get their defaults
('pending', None, 0.0)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from array import array
from typing import Any, Callable, Iterable, Optional, TypeVar, Union

#: tag -> state class. Filled by :func:`state_type` as modules are imported; read by decoders.
STATE_TYPES: dict[str, type["PlainState"]] = {}
_TAGS: dict[type, str] = {}  # exact class -> tag (a subclass does not inherit its parent's tag)
_VERSIONS: dict[type, int] = {}
_SCHEMAS: dict[type, "StateSchema"] = {}
_TAG_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,47}")  # no dots: a tag never looks like a module path

S = TypeVar("S", bound=type)


class PlainState:
    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        """Pickle's way in (copies, tests, and changelogs of earlier releases): defaults first,
        since older records lack newer fields; names this class does not have are ignored."""
        for f in dataclasses.fields(self):
            if f.default is not dataclasses.MISSING:
                object.__setattr__(self, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                object.__setattr__(self, f.name, f.default_factory())
        known = {f.name for f in dataclasses.fields(self)}
        parts = state if isinstance(state, tuple) else (state,)
        for part in parts:  # (dict state, slot state) from pickle, or a plain dict
            for name, value in (part or {}).items():
                if name in known:
                    object.__setattr__(self, name, value)


def state_type(tag: str, version: int = 1) -> Callable[[S], S]:
    """Class decorator: register a ``@dataclass(slots=True)`` subclass of :class:`PlainState`
    under ``tag`` (goes above the ``@dataclass`` line, which replaces the class)."""
    if not _TAG_PATTERN.fullmatch(tag):
        raise ValueError(f"state tag {tag!r}: use a lower-case word (a-z, 0-9, _), not a module path")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"state tag {tag!r}: version must be an integer >= 1, not {version!r}")

    def register(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, PlainState) and dataclasses.is_dataclass(cls)
                and "__slots__" in cls.__dict__):
            raise TypeError(f"@state_type({tag!r}) goes on a @dataclass(slots=True) subclass of "
                            f"PlainState, above the @dataclass line (got {cls!r})")
        known = STATE_TYPES.get(tag)
        if known is not None and _name(known) != _name(cls):  # the same class again: a reload
            raise ValueError(f"state tag {tag!r} is already taken by {_name(known)}")
        if known is not None:
            _TAGS.pop(known, None)
        STATE_TYPES[tag] = cls
        _TAGS[cls] = tag
        _VERSIONS[cls] = version
        _SCHEMAS.pop(cls, None)
        return cls

    return register


def tag_of(cls: type) -> Optional[str]:
    """The tag ``cls`` itself is registered under (None: not registered)."""
    return _TAGS.get(cls)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True)
class StateSchema:
    """What a record of one state class may hold: its fields, their checks and defaults."""

    tag: str
    version: int
    cls: type
    fields: tuple[str, ...]
    checks: dict[str, Callable[[Any], bool]]
    types: dict[str, str]  # field -> its annotation, for error messages
    defaults: dict[str, Callable[[], Any]]  # fields that have a default -> a maker of it

    def check(self, name: str, value: Any) -> bool:
        return self.checks[name](value)


def schema_of(cls: type) -> StateSchema:
    """The schema of a registered state class (built on first use: annotations may name classes
    defined later in their module)."""
    schema = _SCHEMAS.get(cls)
    if schema is not None:
        return schema
    tag = _TAGS.get(cls)
    if tag is None:
        raise TypeError(f"{_name(cls)} is not a registered state class: decorate it with "
                        "@state_type('<tag>') from semwatch.engine.state")
    hints = typing.get_type_hints(cls)
    checks, texts, defaults = {}, {}, {}
    for f in dataclasses.fields(cls):
        try:
            checks[f.name] = _check_for(hints[f.name])
        except TypeError as exc:
            raise TypeError(f"{_name(cls)}.{f.name}: {exc}") from None
        texts[f.name] = str(f.type)
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = lambda v=f.default: v  # immutable by dataclass rules
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory
    schema = StateSchema(tag, _VERSIONS[cls], cls, tuple(checks), checks, texts, defaults)
    _SCHEMAS[cls] = schema
    return schema


# -- keys of the state mapping --------------------------------------------------------------------
SEP = "\x1f"  # between the label values of one segment in a state key (after "<detector>|")
_KEY_ESCAPES = {"\\": "\\\\", "|": "\\p", SEP: "\\s"}
_KEY_SPECIAL = re.compile(r"[\\|\x1f]")


def segment_key(values: Iterable[str]) -> str:
    """The label values of a segment as one part of a state key, one-to-one: a value holding
    ``\\``, ``|`` or the separator is escaped, so no two segments share a key; any other value
    (every ordinary label) stands as it is, so keys, and the state under them, stay what they were.

    >>> segment_key(["a\\x1fb", "c"]) != segment_key(["a", "b\\x1fc"]), segment_key(["shop", "refunds"])
    (True, 'shop\\x1frefunds')
    """
    values = list(values)
    joined = SEP.join(values)
    if "|" in joined or "\\" in joined or joined.count(SEP) != len(values) - 1:
        joined = SEP.join(map(key_part, values))
    return joined


def key_part(value: str) -> str:
    """One label value as (part of) a state key: see :func:`segment_key`."""
    if "|" in value or "\\" in value or SEP in value:
        return _KEY_SPECIAL.sub(lambda m: _KEY_ESCAPES[m.group()], value)
    return value


_KEY_UNESCAPES = {v[1]: k for k, v in _KEY_ESCAPES.items()}
_KEY_ESCAPED = re.compile(r"\\(.)")


def unescape_part(text: str) -> str:
    """The label value behind :func:`key_part` (a clock or problem book key names its app).

    >>> unescape_part(key_part("a|b/c")) == "a|b/c", unescape_part(key_part("x|y")) == "x|y"
    (True, True)
    """
    if "\\" not in text:
        return text
    return _KEY_ESCAPED.sub(lambda m: _KEY_UNESCAPES.get(m.group(1), m.group(1)), text)


# -- what counts as plain data ------------------------------------------------------------------
_SCALARS = (type(None), bool, int, float, str)


def is_plain(value: Any) -> bool:
    """True for plain data: scalars, lists, tuples, dicts with str or int keys, ``array('d')``
    and registered state objects (whose own fields were checked when they were built)."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is list or t is tuple:
        return all(is_plain(v) for v in value)
    if t is dict:
        return all(type(k) in (str, int) and is_plain(v) for k, v in value.items())
    if t is array:
        return value.typecode == "d"
    return t in _TAGS


def _check_for(hint: Any) -> Callable[[Any], bool]:
    """A check that a value matches a field's annotation (plain-data types only)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return is_plain
    if hint is type(None):
        return lambda v: v is None
    if origin is Union or origin is types.UnionType:
        alternatives = [_check_for(a) for a in args]
        return lambda v: any(c(v) for c in alternatives)
    if hint is float:  # an int is a fine float (an event time that arrived as an integer)
        return lambda v: type(v) is float or type(v) is int
    if hint in (int, bool, str):
        return lambda v: type(v) is hint
    if hint is array:
        return lambda v: type(v) is array and v.typecode == "d"
    if isinstance(hint, type) and issubclass(hint, PlainState):
        return lambda v: isinstance(v, hint) and type(v) in _TAGS
    if hint is list or origin is list:
        item = _check_for(args[0]) if args else is_plain
        return lambda v: type(v) is list and all(item(x) for x in v)
    if hint is tuple or origin is tuple:
        return lambda v: type(v) is tuple and all(is_plain(x) for x in v)
    if hint is dict or origin is dict:
        key = _check_for(args[0]) if args else (lambda k: type(k) in (str, int))
        val = _check_for(args[1]) if args else is_plain
        return lambda v: type(v) is dict and all(key(k) and val(x) for k, x in v.items())
    raise TypeError(f"field type {hint!r} is not plain data (numbers, str, bool, None, list, "
                    "dict, tuple, array('d'), a registered state class)")
