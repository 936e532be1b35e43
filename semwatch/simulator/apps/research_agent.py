"""research-agent: long tool-calling runs (search, fetch, read) whose context grows step by step.

:func:`agent_steps` plays any research-style run, including the runaway loops of token-spike
incidents (see incidents.py): the same calls again and again, with the context dragged along.
"""

from __future__ import annotations

from dataclasses import dataclass

from semwatch.simulator import corpus
from semwatch.simulator.calls import EventMaker, stamp_step
from semwatch.simulator.randomness import RandomStream
from semwatch.simulator.routes import Route, RouteState
from semwatch.simulator.texts import fill, refusal_text
from semwatch.simulator.world import MODELS

APP = "research-agent"
_RESEARCH = corpus.load("research")
_FLAGGED: list[str] = corpus.load("refusals")["flagged_requests"][APP]
_QUESTIONS: list[str] = _RESEARCH["questions"]
_FILLS: dict[str, list[str]] = _RESEARCH["question_fills"]
_FINDINGS: list[str] = _RESEARCH["findings"]
_QUERY_SUFFIXES: list[str] = _RESEARCH["query_suffixes"]
_URL_HOSTS: list[str] = _RESEARCH["url_hosts"]
_URL_WORDS: list[str] = _RESEARCH["url_words"]

_TOOL_SCHEMA_TOKENS = 350
_CONTEXT_FILL = 0.92  # of the context window, at which the framework summarises old context


@dataclass
class AgentRun:
    route: Route
    state: RouteState
    version: int
    tenant: str
    run_id: str
    t0: float
    question: str
    steps: int
    refused: bool = False
    flagged: bool = False
    terms: list[str] | None = None  # what the agent searches for
    runaway: bool = False
    polling_s: float = 0.0  # a polling runaway spreads its steps over this long; 0: a tight loop


def research_run(maker: EventMaker, t0: float, out: list) -> None:
    rng = maker.rng
    route = maker.sim.routes.pick(rng, APP)
    tenant = maker.sim.population.pick_tenant(rng, APP)
    state = route.at(t0)
    version = state.pick_version(rng)
    refusal_factor = route.versions[version].refusal_factor
    run_id = maker.ids.next("run_")
    flagged = rng.uniform() < 0.005
    if flagged:
        question = fill(rng, rng.pick(_FLAGGED))
        terms = [question[:60]]
    else:
        question, terms = research_question(rng)
    refused = rng.uniform() < (0.9 if flagged else route.refusal_rate * refusal_factor)
    if refused:
        steps = 1
    elif rng.uniform() < 0.03:
        steps = rng.integer_between(22, 34)  # legitimately long deep-research runs
    else:
        steps = 3 + min(17, int(rng.lognormal(5.5, 0.55)))
    if route.name == "deep-research" and not refused:
        steps += 2
    agent_steps(maker, AgentRun(route, state, version, tenant, run_id, t0, question, steps, refused, flagged,
                                terms), out)


def research_question(rng: RandomStream) -> tuple[str, list[str]]:
    """A question, and the search terms it was made from."""
    template = rng.pick(_QUESTIONS)
    fills = {k: rng.pick(v) for k, v in _FILLS.items()}
    return template.format(**fills), [v for k, v in fills.items() if "{" + k + "}" in template]


def random_url(rng: RandomStream, number: int | None = None, word: str | None = None) -> str:
    host = rng.pick(_URL_HOSTS)
    if number is None:
        number = rng.integer_between(1000, 9999)
    if word is None:
        word = rng.pick(_URL_WORDS)
    return ("https://" + host).format(n=number, w=word)


def next_polling_step(rng: RandomStream, t_end: float, t0: float, polling_s: float, k: int, steps: int) -> float:
    """When step ``k + 1`` of a polling loop starts: spread evenly over ``polling_s``, a little early."""
    return max(t_end + 0.2, t0 + polling_s * (k + 1) / max(1, steps - 1) * rng.uniform_between(0.97, 1.0))


class _Loop:
    """What a runaway repeats: the very same call, or near-duplicate variants of it."""

    def __init__(self, rng: RandomStream, terms: list[str], runaway: bool):
        self.query = rng.pick(terms)
        self.exact = runaway and rng.uniform() < 0.5
        self.urls = [random_url(rng) for _ in range(1 if self.exact else 3)] if runaway else []


def agent_steps(maker: EventMaker, run: AgentRun, out: list) -> list[dict]:
    """Play the run's steps (tool calls, then a final answer); returns its events."""
    rng = maker.rng
    route, state = run.route, run.state
    system_tokens, verbosity, _ = route.versions[run.version]
    model = state.model
    traits = MODELS[model]
    context = system_tokens + len(run.question) / 3.8 + _TOOL_SCHEMA_TOKENS
    t = run.t0
    events: list[tuple[int, dict]] = []
    terms = run.terms or [rng.pick(_FILLS["topic"])]
    loop = _Loop(rng, terms, run.runaway)
    for k in range(run.steps):
        last = k == run.steps - 1
        load = maker.load(route.app, t)
        ev = maker.new_event(run.run_id, route, state, run.version, run.tenant, None)
        err = None if run.runaway else maker.draw_error(state.provider, t, load)
        in_tok = int(min(context, traits.context_window * _CONTEXT_FILL))
        tool_calls = None
        if last:
            out_tok, answer = _final_answer(rng, run, traits.output_factor, verbosity)
            finish = "stop"
        else:
            answer = None
            out_tok = max(12, int(rng.lognormal(85, 0.5) * traits.output_factor))
            finish = "tool_calls"
            tool_calls = _tool_calls(maker, run, k, terms, loop)
        t_end = maker.complete(ev, model, in_tok, out_tok, t, load, err, finish, 8192 if last else 4096)
        if k == 0:
            ev["request_text"] = run.question
            if run.flagged:
                ev["request_flagged"] = True
        if err is not None:
            tool_calls = None
        if tool_calls:
            wait = 0.0  # parallel calls: the slowest one
            for _call, seconds, result_tokens in tool_calls:
                wait = max(wait, seconds)
                context += result_tokens
            ev["tool_calls"] = [call for call, _, _ in tool_calls]
            maker.maybe_mark_refusal(ev, False)  # a tool-calling step is not a refusal
        else:
            wait = rng.lognormal(3.0, 0.5) if err else 0.0  # backing off after an error
        if answer is not None and err is None:
            ev["response_text"] = answer
            maker.maybe_mark_refusal(ev, run.refused)
            if not run.runaway and rng.uniform() < 0.3:
                ev["metrics"] = {"quality_score": maker.quality_score(0.8, 0.1), "steps": run.steps}
            maker.maybe_feedback(ev, 0.03)
        context += out_tok + 20
        if context > traits.context_window * _CONTEXT_FILL and not run.runaway:
            context *= 0.55  # the framework summarises old context
        stamp_step(ev, t_end, events)
        if run.runaway:
            # each step drags the whole context along; a polling loop spreads its steps over
            # `polling_s`, a tight one goes on as fast as the model and the tools answer
            context += rng.lognormal(1400, 0.5)
            if run.polling_s > 0:
                t = next_polling_step(rng, t_end, run.t0, run.polling_s, k, run.steps)
            else:
                t = t_end + wait + rng.lognormal(0.15, 0.5)
        else:
            t = t_end + wait + rng.lognormal(0.15, 0.5)
    out.extend(events)
    return [e for _, e in events]


def _final_answer(rng: RandomStream, run: AgentRun, output_factor: float, verbosity: float) -> tuple[int, str]:
    """Output tokens and text of the last step: a refusal, a runaway's give-up, or the research summary."""
    if run.refused:
        return max(10, int(rng.lognormal(55, 0.4) * output_factor)), refusal_text(rng, "research")
    if run.runaway:
        out_tok = max(20, int(rng.lognormal(150, 0.5) * output_factor))
        return out_tok, rng.pick(_RESEARCH["runaway_answers"])
    out_tok = max(200, int(rng.lognormal(run.route.output_median * verbosity, 0.5) * output_factor))
    numbers = rng.integer_between(1000, 9999), rng.integer_between(1000, 9999)
    urls = [random_url(rng, n) for n in numbers]
    first = rng.integer_between(0, len(_FINDINGS) - 1)
    findings = [_FINDINGS[(first + j * 4) % len(_FINDINGS)] for j in range(3)]  # 3 distinct
    answer = rng.pick(_RESEARCH["answers"]).format(lead=rng.pick(_RESEARCH["leads"]), f1=findings[0],
                                                   f2=findings[1], f3=findings[2], u1=urls[0], u2=urls[1])
    return out_tok, answer


def _tool_calls(maker: EventMaker, run: AgentRun, k: int, terms: list[str],
                loop: _Loop) -> list[tuple[dict, float, float]]:
    """One or two parallel tool calls: ``(call, seconds it takes, tokens its result adds)`` each."""
    rng = maker.rng
    calls = []
    for _ in range(2 if rng.uniform() < 0.2 else 1):
        x = rng.uniform()
        if run.runaway:
            name = "web_search" if x < 0.6 else "fetch_url"
        else:
            name = "web_search" if (k == 0 or x < 0.4) else ("fetch_url" if x < 0.88 else "read_pdf")
        if name == "web_search":
            if run.runaway and loop.exact:
                query = loop.query
            else:
                query = f"{rng.pick(terms)} {rng.pick(_QUERY_SUFFIXES)}".strip()
            args = {"query": query}
            result_tokens = rng.lognormal(650, 0.3)
            result = {"results": [{"title": f"{rng.pick(_FINDINGS)[:40]}...", "url": random_url(rng)}
                                  for _ in range(3)]}
            seconds = rng.lognormal(1.1, 0.5)
        elif name == "fetch_url":
            args = {"url": rng.pick(loop.urls) if run.runaway else random_url(rng)}
            result_tokens = rng.lognormal(2600, 0.7)
            result = {"status": 200, "chars": int(result_tokens * 4)}
            seconds = rng.lognormal(2.2, 0.7)
        else:
            args = {"url": random_url(rng, word="pdf")}
            result_tokens = rng.lognormal(6000, 0.6)
            result = {"pages": rng.integer_between(4, 40)}
            seconds = rng.lognormal(4.0, 0.6)
        if run.runaway and run.polling_s > 0:
            seconds = 0.0  # a polling loop: the wait is in the pacing
        calls.append(({"name": name, "call_id": maker.ids.next("call_", 12), "arguments": args,
                       "side_effect": False, "result": result}, seconds, result_tokens))
    return calls
