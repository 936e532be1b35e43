"""The bytes of one state record: msgpack, explicit and versioned; decoding runs no code.

A record is ``MAGIC`` (``0xc1`` — a byte msgpack never uses and pickle never starts with —, ``sw``
and the format version) followed by one msgpack value, a state object. Plain values are msgpack's
own (None, bool, int, float including inf and nan, str, list, map with str or int keys); three
extension types carry the rest:

- a state object: ``[ext(1, tag), version, {field: value}]`` — its tag (:mod:`semwatch.engine.state`),
  its class's schema version when written, and its dataclass fields by name;
- ``array('d')``: ``ext(2, little-endian doubles)``;
- a tuple: ``[ext(3, b""), item, ...]``.

Decoding looks tags up in :data:`~semwatch.engine.state.STATE_TYPES` only, builds the object with
its class's ``__new__`` and field defaults (no ``__init__``, no ``__setstate__``, nothing
imported), checks every field against the class's schema, and refuses anything else with
:class:`StateDecodeError`. A field missing from an older record takes its default; a field this
release does not know (a newer record) is ignored and logged once per class and field.

>>> from semwatch.engine.lifecycle import Lifecycle
>>> blob = dumps(Lifecycle(status="firing", peak=float("inf")))
>>> blob[:4], len(blob)
(b'\\xc1sw\\x01', 103)
>>> loads(blob)
Lifecycle(status='firing', since=0.0, fired_at=0.0, clear_since=None, severity=None, peak=inf)
>>> loads(MAGIC + bytes.fromhex("93d401ff01c0"))  # ext(1, tag b"\\xff"): not a tag
Traceback (most recent call last):
...
semwatch.engine.state_format.StateDecodeError: state record refused: a state tag that is not UTF-8
"""

from __future__ import annotations

import logging
import sys
import threading
from array import array
from typing import Any

import msgpack

from semwatch.engine.state import STATE_TYPES, PlainState, is_plain, schema_of, tag_of

log = logging.getLogger("semwatch.state")

FORMAT_VERSION = 1
MAGIC = b"\xc1sw" + bytes([FORMAT_VERSION])
_EXT_STATE, _EXT_ARRAY, _EXT_TUPLE = 1, 2, 3
_TUPLE_MARK = msgpack.ExtType(_EXT_TUPLE, b"")
_BIG_ENDIAN = sys.byteorder == "big"
_MAX_RECORD_BYTES = 64 * 1024 * 1024
_local = threading.local()


class StateDecodeError(ValueError):
    """A record that is not a state record this release can read; nothing of it was executed."""

    def __init__(self, reason: str):
        super().__init__(f"state record refused: {reason}")
        self.reason = reason


class StateEncodeError(TypeError):
    """A value in detector state that has no place in a state record (a programming error)."""


# -- encoding -------------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    """msgpack's hook for what it does not pack itself (strict types: exact list, dict, int...)."""
    cls = type(obj)
    tag = tag_of(cls)
    if tag is not None:
        schema = schema_of(cls)
        return [msgpack.ExtType(_EXT_STATE, tag.encode()), schema.version,
                {name: getattr(obj, name) for name in schema.fields}]
    if cls is array and obj.typecode == "d":
        if _BIG_ENDIAN:
            obj = array("d", obj)
            obj.byteswap()
        return msgpack.ExtType(_EXT_ARRAY, obj.tobytes())
    if cls is tuple:
        return [_TUPLE_MARK, *obj]
    what = f"array({obj.typecode!r})" if cls is array else f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(obj, PlainState):
        hint = "register its class with @state_type('<tag>') from semwatch.engine.state"
    else:
        hint = ("keep state to None, bool, int, float, str, list, dict (str or int keys), tuple, "
                "array('d') and registered state classes")
    raise StateEncodeError(f"cannot write a {what} into a state record: {hint}")


def dumps(state: PlainState) -> bytes:
    """One state object as a record."""
    if tag_of(type(state)) is None:
        _default(state)  # raises, saying what to do
    packer = getattr(_local, "packer", None)
    if packer is None:  # one per thread: a packer is not reentrant, and making one costs 15%
        packer = _local.packer = msgpack.Packer(default=_default, strict_types=True, use_bin_type=True,
                                                unicode_errors="surrogatepass")
    try:
        body = packer.pack(state)
    except (OverflowError, ValueError) as exc:  # an int beyond 64 bits, nesting too deep
        raise StateEncodeError(f"cannot write {type(state).__name__} into a state record: {exc}") from exc
    return MAGIC + body


# -- decoding -------------------------------------------------------------------------------------
class _Tag(str):
    """A state tag as read from a record (only ever the first item of a state list)."""


_warned: set[tuple[str, str]] = set()


def _ext(code: int, data: bytes) -> Any:
    if code == _EXT_STATE:
        try:
            return _Tag(data.decode())
        except UnicodeDecodeError:
            raise StateDecodeError("a state tag that is not UTF-8") from None
    if code == _EXT_ARRAY:
        if len(data) % 8:
            raise StateDecodeError(f"an array of {len(data)} bytes (not whole doubles)")
        values = array("d", data)
        if _BIG_ENDIAN:
            values.byteswap()
        return values
    if code == _EXT_TUPLE and not data:
        return _TUPLE_MARK
    raise StateDecodeError(f"unknown extension type {code}")


def _build(items: list) -> Any:
    """msgpack's hook for every list, innermost first: state objects and tuples are built here."""
    if not items:
        return items
    head = items[0]
    if type(head) is _Tag:
        return _state(head, items)
    if head is _TUPLE_MARK:
        return tuple(items[1:])
    return items


def _state(tag: str, items: list) -> PlainState:
    cls = STATE_TYPES.get(tag)
    if cls is None:
        raise StateDecodeError(f"unknown state tag {tag[:48]!r}")
    if len(items) != 3 or type(items[1]) is not int or type(items[2]) is not dict:
        raise StateDecodeError(f"{tag}: not [tag, version, fields]")
    schema = schema_of(cls)
    version, fields = items[1], items[2]
    if version > schema.version and (tag, "") not in _warned:
        _warned.add((tag, ""))
        log.warning("state %s: records of version %d come from a newer semwatch (this one knows %d); "
                    "read with the fields it knows", tag, version, schema.version)
    obj = cls.__new__(cls)
    for name in schema.fields:
        if name in fields:
            value = fields[name]
            if not schema.check(name, value):
                raise StateDecodeError(f"{tag}.{name}: a {type(value).__name__} where the schema "
                                       f"says {schema.types[name]}")
        elif name in schema.defaults:
            value = schema.defaults[name]()
        else:
            raise StateDecodeError(f"{tag}: required field {name!r} missing")
        object.__setattr__(obj, name, value)
    for name in fields:
        if name not in schema.checks:  # a newer release's field: ignored, but only plain data
            if type(name) is not str or not is_plain(fields[name]):
                raise StateDecodeError(f"{tag}: an unknown field that is not plain data")
            if (tag, name) not in _warned:
                _warned.add((tag, name))
                log.warning("state %s: field %r is unknown to this semwatch (a newer record?); "
                            "ignored", tag, name[:48])
    return obj


def loads(data: bytes) -> PlainState:
    """The state object of a record; :class:`StateDecodeError` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateDecodeError(f"a {type(data).__name__}, not bytes")
    data = bytes(data)
    if data[:3] != MAGIC[:3]:
        raise StateDecodeError("not a state record (no header)")
    if data[:4] != MAGIC:
        raise StateDecodeError(f"format version {data[3]} (this semwatch reads {FORMAT_VERSION})")
    if len(data) > _MAX_RECORD_BYTES:
        raise StateDecodeError(f"{len(data)} bytes")
    try:
        value = msgpack.unpackb(data[4:], ext_hook=_ext, list_hook=_build, strict_map_key=False,
                                raw=False, unicode_errors="surrogatepass", use_list=True,
                                timestamp=0)
    except StateDecodeError:
        raise
    except Exception as exc:  # malformed msgpack, unhashable keys, too deep: refused all the same
        raise StateDecodeError(f"malformed ({type(exc).__name__}: {str(exc)[:120]})") from None
    if tag_of(type(value)) is None:
        raise StateDecodeError(f"the record holds a {type(value).__name__}, not a state object")
    return value
