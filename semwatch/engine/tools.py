"""The tool/entity map: which tool calls change the world, move money, and which arguments name entities.

Loaded from ``config/tools.yaml`` into :class:`ToolMap`; used by the wrong-entity detectors.

Precedence, most specific first:

1. an event's own ``tool_calls[].side_effect`` (the producer knows best);
2. the tool's entry in ``tools.yaml``;
3. the name, read as words of its snake_case, camelCase or kebab-case form: a name that *starts*
   with a read verb is a read (``get_refund_status``); else one that contains a side-effect verb
   (``refund``, ``cancel``, ``update`` ...) is a write; else one that contains a read word (a read
   verb anywhere, or a noun such as ``status``, ``details``, ``history``: ``web_search``,
   ``order_details``) is a read;
4. anything else is an unknown tool, and ``defaults.unknown_tools`` decides: ``write`` by default,
   because an unlisted write treated as a read is never checked (``exchange_item``,
   ``rebook_flight``, ``apply_credit`` on another customer's order), while a read checked as a write
   costs at most a false alarm on a call that names an entity outside the run's scope.

``refund``, ``transfer``, ``charge``, ``pay``, ``credit``, ``reimburse`` ... move money.
``ToolInfo.source`` (and the incident evidence's ``side_effect_from``) says which rule decided.

Entity arguments: a tool listed with ``entity_args`` uses exactly those (``{argument: entity type}``;
dotted names reach into nested arguments). Otherwise every top-level argument named ``*_id`` is an
entity argument of that type, and ``*_ids`` a list of them (``order_ids`` -> ``order_id``), except
the bookkeeping ids in ``defaults.ignore_args`` (``trace_id``, ``request_id`` ...).

>>> tm = ToolMap()
>>> info = tm.info("refundOrder")
>>> (info.side_effect, info.money_moving, info.source)
(True, True, 'verb')
>>> tm.info("get_refund_status").side_effect
False
>>> from semwatch.contract import ToolCall
>>> tm.entity_values(ToolCall(name="cancel_order", arguments={"order_ids": ["#W1", 2], "trace_id": "t"}))
[('order_ids', 'order_id', '#W1'), ('order_ids', 'order_id', '2')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from semwatch.contract import ToolCall
from semwatch.engine.json_schema import check_schema

SIDE_EFFECT_VERBS = ("refund", "cancel", "update", "delete", "transfer", "send", "book", "modify",
                     "create", "charge", "pay", "close", "reset", "grant", "revoke", "return",
                     "exchange", "rebook", "reissue", "assign", "approve", "apply", "credit", "set",
                     "add", "remove", "submit", "issue", "change", "edit", "write", "post", "place",
                     "reserve", "schedule", "reschedule", "ship", "escalate", "reimburse")
MONEY_VERBS = ("refund", "transfer", "charge", "pay", "credit", "reimburse", "compensate",
               "withdraw", "deposit", "payout")
READ_VERBS = ("get", "list", "search", "find", "lookup", "read", "fetch", "query", "check", "view",
              "show", "describe", "count", "validate", "preview", "estimate", "calculate", "compute",
              "think", "retrieve", "inspect", "browse", "verify", "summarize", "summarise", "analyze",
              "analyse", "explain", "load", "peek", "track", "quote", "compare", "is",
              "has", "can")
# Nouns that make a name read as a read when it has no side-effect verb: order_details, flight_status.
READ_NOUNS = ("status", "details", "detail", "info", "information", "history", "summary", "balance",
              "availability", "policy", "policies", "search", "lookup", "list", "report", "stats",
              "calculator", "knowledge", "docs", "faq")
IGNORE_ARGS = ("call_id", "tool_call_id", "request_id", "trace_id", "span_id", "session_id",
               "conversation_id", "idempotency_id", "correlation_id", "message_id", "template_id",
               "locale_id")

_MAX_IDS_PER_ARG = 50  # an argument listing more ids than this is checked on its first 50 only
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_ENTITY_TYPE = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"


def name_words(name: str) -> list[str]:
    """Lower-case words of a tool name in snake, camel, kebab or dotted case.

    >>> name_words("billing.refundOrder-v2")
    ['billing', 'refund', 'order', 'v2']
    """
    words: list[str] = []
    for part in _WORD_SPLIT.split(name):
        if part:
            words.extend(w.lower() for w in _CAMEL.split(part) if w)
    return words


def entity_id(value: Any) -> Optional[str]:
    """An id as compared against the subject: a string; whole numbers without a decimal point."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, (str, int)):
        text = str(value).strip()
        return text[:256] or None
    return None


class ToolSpec(BaseModel):
    """One tool in ``tools.yaml``. Unset fields fall back to the name-based defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    side_effect: Optional[bool] = None
    money_moving: Optional[bool] = None
    # argument name (dotted for nested) -> entity type, e.g. {order_id: order_id, customer: user_id}
    entity_args: Optional[dict[str, str]] = None
    description: Optional[str] = None
    # The JSON Schema of the tool's arguments, as given to the model (function definition
    # ``parameters``); checked by the malformed_tool_call detector (semwatch/engine/json_schema.py).
    parameters: Optional[dict[str, Any]] = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None:
            check_schema(value)
        return value

    @field_validator("entity_args")
    @classmethod
    def _entity_types(cls, value: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        for arg, etype in (value or {}).items():
            if not re.match(_ENTITY_TYPE, etype):
                raise ValueError(f"entity type {etype!r} of argument {arg!r} must be an identifier "
                                 "like 'order_id'")
        return value


class ToolDefaults(BaseModel):
    """Name-based defaults for tools that ``tools`` does not list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    side_effect_verbs: tuple[str, ...] = SIDE_EFFECT_VERBS
    money_moving_verbs: tuple[str, ...] = MONEY_VERBS
    read_verbs: tuple[str, ...] = READ_VERBS
    read_nouns: tuple[str, ...] = READ_NOUNS
    # A tool that no rule above names: "write" (its entity arguments are scope-checked) or "read".
    unknown_tools: Literal["write", "read"] = "write"
    # Arguments named *_id / *_ids are entity arguments unless listed here.
    infer_entity_args: bool = True
    ignore_args: tuple[str, ...] = IGNORE_ARGS

    @field_validator("side_effect_verbs", "money_moving_verbs", "read_verbs", "read_nouns")
    @classmethod
    def _verbs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not re.fullmatch(r"[a-z0-9]+", v)]
        if bad:
            raise ValueError(f"verbs must be single lower-case words, got {bad}")
        return value


@dataclass(frozen=True)
class ToolInfo:
    side_effect: bool
    money_moving: bool  # meaningful only for side-effecting calls
    # Where side_effect came from: "config", "read-verb" (the name starts with one), "verb" (a
    # side-effect verb), "read-word" (a read verb or noun elsewhere), "unknown-write"/"unknown-read".
    source: str
    entity_args: Optional[tuple[tuple[str, str], ...]]  # configured (argument, type); None = infer


class ToolMap(BaseModel):
    """``config/tools.yaml``: ``tools: {name: ToolSpec}`` and ``defaults: ToolDefaults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: dict[str, ToolSpec] = Field(default_factory=dict)
    defaults: ToolDefaults = ToolDefaults()

    _cache: dict[str, ToolInfo] = PrivateAttr(default_factory=dict)

    @field_validator("tools", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    # -- classification ------------------------------------------------------------------------
    def info(self, name: str) -> ToolInfo:
        """How a tool is treated when the event says nothing (config over name defaults)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        spec = self.tools.get(name)
        words = name_words(name)
        d = self.defaults
        starts_with_read = bool(words) and words[0] in d.read_verbs
        verb_side = not starts_with_read and any(_has_word(words, v) for v in d.side_effect_verbs)
        verb_money = not starts_with_read and any(_has_word(words, v) for v in d.money_moving_verbs)
        if spec is not None and spec.side_effect is not None:
            side, source = spec.side_effect, "config"
        elif starts_with_read:
            side, source = False, "read-verb"
        elif verb_side:
            side, source = True, "verb"
        elif any(w in d.read_verbs or w in d.read_nouns for w in words):
            side, source = False, "read-word"
        else:
            side = d.unknown_tools == "write"
            source = f"unknown-{d.unknown_tools}"
        money = spec.money_moving if spec is not None and spec.money_moving is not None else verb_money
        args = None
        if spec is not None and spec.entity_args is not None:
            args = tuple(sorted(spec.entity_args.items()))
        info = ToolInfo(side_effect=side, money_moving=bool(money), source=source, entity_args=args)
        if len(self._cache) < 4096:  # tool names come from traffic: bound the cache
            self._cache[name] = info
        return info

    def side_effect(self, call: ToolCall) -> tuple[bool, str]:
        """(has side effects, why): the event's own flag wins over config, config over verbs."""
        if call.side_effect is not None:
            return bool(call.side_effect), "event"
        info = self.info(call.name)
        return info.side_effect, info.source

    def money_moving(self, call: ToolCall) -> bool:
        """Whether a (side-effecting) call moves money: config, else the name's verbs."""
        return self.info(call.name).money_moving

    def parameters(self, name: str) -> Optional[dict[str, Any]]:
        """The tool's configured argument schema, if any."""
        spec = self.tools.get(name)
        return spec.parameters if spec is not None else None

    def is_entity_arg(self, tool: str, arg: str) -> bool:
        """Whether a top-level argument of the tool names an entity (configured or ``*_id``)."""
        info = self.info(tool)
        if info.entity_args is not None:
            return any(a == arg for a, _ in info.entity_args)
        return self.defaults.infer_entity_args and self.inferred_type(arg) is not None

    # -- entity arguments ----------------------------------------------------------------------
    def entity_values(self, call: ToolCall) -> list[tuple[str, str, str]]:
        """``(argument, entity type, id)`` for every entity id a call names, in argument order."""
        info = self.info(call.name)
        out: list[tuple[str, str, str]] = []
        if info.entity_args is not None:
            for arg, etype in info.entity_args:
                value = _dotted(call.arguments, arg)
                out.extend((arg, etype, v) for v in _ids(value))
            return out
        if not self.defaults.infer_entity_args:
            return out
        for arg, value in call.arguments.items():
            etype = self.inferred_type(arg)
            if etype is not None:
                out.extend((arg, etype, v) for v in _ids(value))
        return out

    def inferred_type(self, arg: str) -> Optional[str]:
        """``order_id`` -> ``order_id``; ``order_ids`` -> ``order_id``; others -> None."""
        if arg in self.defaults.ignore_args or not isinstance(arg, str):
            return None
        if arg.endswith("_id") and len(arg) > 3:
            return arg
        if arg.endswith("_ids") and len(arg) > 4:
            singular = arg[:-1]
            return None if singular in self.defaults.ignore_args else singular
        return None


def _has_word(words: list[str], verb: str) -> bool:
    # "refunds" and "refunded" still name the verb; "payment" or "sender" do not.
    return any(w == verb or w in (verb + "s", verb + "es", verb + "ed", verb + "d") for w in words)


def _dotted(arguments: dict[str, Any], path: str) -> Any:
    if path in arguments:
        return arguments[path]
    value: Any = arguments
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _ids(value: Any) -> Iterator[str]:
    if isinstance(value, (list, tuple)):
        for item in value[:_MAX_IDS_PER_ARG]:
            ident = entity_id(item)
            if ident is not None:
                yield ident
    else:
        ident = entity_id(value)
        if ident is not None:
            yield ident


def ids_in_result(result: Any, wanted: Optional[set[str]] = None, max_nodes: int = 2000,
                  max_depth: int = 8) -> list[tuple[str, str]]:
    """``(entity type, id)`` pairs found anywhere in a tool result.

    A value counts when its key is the entity type (``order_id``), its plural (``order_ids``), or
    ``id`` inside an object listed under the entity's noun (``{"orders": [{"id": "#W3"}]}``).
    ``wanted`` limits the types collected. Bounded: a huge result is read only up to ``max_nodes``.

    >>> ids_in_result({"orders": [{"order_id": "#W3"}, {"id": "#W4"}], "user": {"id": 7}})
    [('order_id', '#W3'), ('order_id', '#W4'), ('user_id', '7')]
    """
    out: list[tuple[str, str]] = []
    budget = [max_nodes]

    def noun_type(key: Optional[str]) -> Optional[str]:
        if not key:
            return None
        k = key.lower()
        if k.endswith("ies"):
            k = k[:-3] + "y"
        elif k.endswith("s"):
            k = k[:-1]
        return f"{k}_id" if re.fullmatch(r"[a-z][a-z0-9_]*", k) else None

    def take(etype: Optional[str], value: Any) -> None:
        if etype is None or (wanted is not None and etype not in wanted):
            return
        for ident in _ids(value):
            out.append((etype, ident))

    def walk(node: Any, parent_key: Optional[str], depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or depth > max_depth:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    continue
                if key.endswith("_id") and len(key) > 3:
                    take(key, value)
                elif key.endswith("_ids") and len(key) > 4:
                    take(key[:-1], value)
                elif key == "id":
                    take(noun_type(parent_key), value)
                if isinstance(value, (dict, list)):
                    walk(value, key, depth + 1)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, (dict, list)):
                    walk(item, parent_key, depth + 1)

    walk(result, None, 0)
    return out
