"""support-bot: multi-turn customer chats, one event per turn.

Requests come with the answer that fits them; some are in another language, some add PII, a few
are harmful (flagged) and legitimately refused. Ordinary requests are refused at the route's low
base rate, or at the spike's rate on a prompt version that refuses too much.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from semwatch.simulator import corpus
from semwatch.simulator.calls import EventMaker, stamp
from semwatch.simulator.population import Customer
from semwatch.simulator.randomness import cumulative
from semwatch.simulator.routes import Route, RouteState
from semwatch.simulator.texts import fill, refusal_text, style
from semwatch.simulator.world import MODELS

APP = "support-bot"
_SUPPORT = corpus.load("support")
_FLAGGED: list[str] = corpus.load("refusals")["flagged_requests"][APP]
_CONVERSATIONS = {route: [(c["request"], c["answer"]) for c in pairs]
                  for route, pairs in _SUPPORT["conversations"].items()}
_FOREIGN = {route: [(r["request"], r["language"]) for r in requests]
            for route, requests in _SUPPORT["foreign_requests"].items()}
_FOREIGN_ANSWERS: list[str] = _SUPPORT["foreign_answers"]
PII_SUFFIXES: list[str] = _SUPPORT["pii_suffixes"]
_OPENERS: list[str] = _SUPPORT["openers"]
_CLOSERS: list[str] = _SUPPORT["closers"]

_TURNS = (1, 2, 3, 4, 5)
_TURNS_CUM = cumulative([0.55, 0.25, 0.12, 0.05, 0.03])
_MAX_TOKENS = 1024


@dataclass
class _Request:
    text: str
    flagged: bool
    refused: bool
    false_refusal: bool  # an ordinary request refused
    order: str | None  # the customer's order the chat is about, if any
    answer: str = ""  # the answer template that fits (not for foreign or flagged requests)
    language: int = 0  # of a foreign request
    values: dict = field(default_factory=dict)  # slot values shared by the request and its answer


def support_session(maker: EventMaker, t0: float, out: list, route: Route | None = None) -> None:
    """A chat from ``t0``, on ``route`` (a quiet one) or on one of the app's split."""
    rng = maker.rng
    if route is None:
        route = maker.sim.routes.pick(rng, APP)
    tenant = maker.sim.population.pick_tenant(rng, APP)
    conversation = maker.ids.next("conv_", 12)
    customer = rng.pick(maker.sim.population.customers_by_tenant[tenant]) if rng.chance(0.6) else None
    turns = rng.weighted_pick(_TURNS, _TURNS_CUM)
    foreign = rng.chance(0.035)
    t = t0
    history = 0  # tokens of the conversation so far
    for _ in range(turns):
        state, version, traits, load, ev = maker.begin_turn(route, t, tenant, conversation)
        system_tokens, verbosity, refusal_factor = traits
        req = _request(maker, route, state, version, customer, foreign, refusal_factor)
        err = maker.draw_error(state.provider, t, load)
        output_factor = MODELS[state.model].output_factor
        in_tok = int(system_tokens + history + len(req.text) / 3.8 + rng.lognormal(480.0, 0.65))
        if req.refused:
            out_tok = max(8, int(rng.lognormal(48.0, 0.45) * output_factor))
            answer = refusal_text(rng, route.name if not req.flagged else None)
        else:  # now and then a much longer answer
            out_tok = max(5, int(rng.lognormal(route.output_median * verbosity, 0.6) * output_factor
                                 * (3.0 if rng.uniform() < 0.02 else 1.0)))
            answer = _helpful_answer(maker, req, customer, foreign)
        t_end = maker.complete(ev, state.model, in_tok, out_tok, t, load, err, "stop", _MAX_TOKENS)
        maker.add_exchange(ev, req.text, answer, req.refused, req.flagged, err)
        if customer is not None:
            ev["subject"] = _subject(customer, req)
        _user_reaction(maker, ev, req, err)
        stamp(ev, t_end, out)
        history += int(len(req.text) / 3.8 + out_tok + 12)
        if err is not None and rng.uniform() < 0.7:
            t = t_end + rng.lognormal(4.0, 0.6)  # the user retries
        else:
            t = t_end + rng.lognormal(40.0, 0.7)  # the user reads, types the next message


def _request(maker: EventMaker, route: Route, state: RouteState, version: int, customer: Customer | None,
             foreign: bool, refusal_factor: float) -> _Request:
    rng = maker.rng
    flagged = rng.uniform() < 0.005
    order = rng.pick(customer.orders)["order_id"] if customer and customer.orders else None
    if flagged:
        text = fill(rng, rng.pick(_FLAGGED), None)
        return _Request(text, flagged=True, refused=rng.uniform() < 0.92, false_refusal=False, order=order)
    values: dict = {}
    answer, language = "", 0
    if foreign:
        template, language = rng.pick(_FOREIGN[route.name])
        text = fill(rng, template, customer, order, values)
    else:
        template, answer = rng.pick(_CONVERSATIONS[route.name])
        text = style(rng, fill(rng, template, customer, order, values))
    if rng.uniform() < 0.22:
        text = f"{text} {fill(rng, rng.pick(PII_SUFFIXES), customer, None, values)}"
    p_refusal = route.refusal_rate * refusal_factor
    if state.spike_version and version == state.spike_version:
        p_refusal = max(p_refusal, state.spike_refusal_rate)
    refused = rng.uniform() < p_refusal
    return _Request(text, flagged=False, refused=refused, false_refusal=refused, order=order, answer=answer,
                    language=language, values=values)


def _helpful_answer(maker: EventMaker, req: _Request, customer: Customer | None, foreign: bool) -> str:
    rng = maker.rng
    if foreign:
        return _FOREIGN_ANSWERS[req.language]
    if req.flagged:
        return f"{_SUPPORT['flagged_answer']} {rng.pick(_CLOSERS)}"
    body = fill(rng, req.answer, customer, req.order, req.values)
    opener = rng.pick(_OPENERS) if rng.uniform() < 0.5 else ""
    closer = rng.pick(_CLOSERS) if rng.uniform() < 0.6 else ""
    return " ".join(x for x in (opener, body, closer) if x)


def _subject(customer: Customer, req: _Request) -> dict:
    subject = {"user_id": [customer.user_id]}
    if req.order and "#W" in req.text:
        subject["order_id"] = [req.order]
    return subject


def _user_reaction(maker: EventMaker, ev: dict, req: _Request, err: str | None) -> None:
    """Thumbs (more often down after an error or a refusal) and, for some answers, a quality score."""
    rng = maker.rng
    if err is not None:
        thumbs_down = 0.08
    elif req.false_refusal:
        thumbs_down = 0.18
    elif req.refused:
        thumbs_down = 0.05
    else:
        thumbs_down = 0.02
    maker.maybe_feedback(ev, thumbs_down, 0.975)
    if err is None and rng.uniform() < 0.35:
        if req.false_refusal:
            ev["metrics"] = {"quality_score": round(rng.uniform_between(0.1, 0.5), 3)}
        elif req.refused:
            ev["metrics"] = {"quality_score": round(rng.uniform_between(0.6, 0.95), 3)}
        else:
            ev["metrics"] = {"quality_score": maker.quality_score(0.86, 0.07)}
