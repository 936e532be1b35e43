"""code-assistant: one-shot completions and multi-turn chats and reviews, with long outputs.

Requests ask to write, fix, explain or review code; the answer fits the kind of request and, for
"write" requests, the task.
"""

from __future__ import annotations

from dataclasses import dataclass

from semwatch.simulator import corpus
from semwatch.simulator.calls import EventMaker, stamp
from semwatch.simulator.randomness import RandomStream, cumulative
from semwatch.simulator.texts import capitalise, fill, refusal_text
from semwatch.simulator.world import MODELS

APP = "code-assistant"
_CODE = corpus.load("code")
_FLAGGED: list[str] = corpus.load("refusals")["flagged_requests"][APP]
_LANGUAGES: list[str] = _CODE["languages"]
_TASKS: list[str] = [t["text"] for t in _CODE["tasks"]]
_TASK_BODIES: list[int | None] = [t["body"] for t in _CODE["tasks"]]  # index into _BODIES
_REQUESTS: list[tuple[str, str]] = [(r["kind"], r["template"]) for r in _CODE["requests"]]
_SNIPPETS = [corpus.code_lines(s) for s in _CODE["snippets"]]
_ERRORS: list[str] = _CODE["errors"]
_DIFFS = [corpus.code_lines(d) for d in _CODE["diffs"]]
_BODIES = [corpus.code_lines(b) for b in _CODE["bodies"]]
_TESTS = corpus.code_lines(_CODE["tests"])
_EXPLANATIONS: list[str] = _CODE["explanations"]
_NOTES = _EXPLANATIONS[:5]  # the others refer to an earlier answer or a bug, not a note on a rewrite

_TURNS = (1, 2, 3, 4, 5)
_TURNS_CUM = cumulative([0.45, 0.25, 0.15, 0.10, 0.05])


@dataclass
class _Request:
    text: str
    flagged: bool
    refused: bool
    # what the answer draws on; a flagged request answered anyway gets the answer to request 0, task 0
    kind: str
    task_i: int = 0
    error: str = ""
    diff: str = ""
    body: int | None = None  # the code that does the task, if the request names one


def code_session(maker: EventMaker, t0: float, out: list) -> None:
    rng = maker.rng
    route = maker.sim.routes.pick(rng, APP)
    tenant = maker.sim.population.pick_tenant(rng, APP)
    completion = route.name == "completion"  # one-shot; the other routes are chats
    conversation = maker.ids.next("conv_", 12) if not completion else None
    turns = 1 if completion else rng.weighted_pick(_TURNS, _TURNS_CUM)
    t = t0
    history = 0  # tokens of the conversation so far
    for _ in range(turns):
        state, version, traits, load, ev = maker.begin_turn(route, t, tenant, conversation)
        system_tokens, verbosity, refusal_factor = traits
        req, language = _request(rng, route.refusal_rate * refusal_factor)
        err = maker.draw_error(state.provider, t, load)
        output_factor = MODELS[state.model].output_factor
        context = rng.lognormal(3500.0, 0.9) if route.name == "review" else rng.lognormal(1200.0, 0.8)
        in_tok = int(system_tokens + history + len(req.text) / 3.5 + context)
        if req.refused:
            out_tok = max(10, int(rng.lognormal(60.0, 0.4) * output_factor))
            answer = refusal_text(rng, "code")
        else:
            out_tok = max(20, int(rng.lognormal(route.output_median * verbosity, 0.7) * output_factor))
            code = _BODIES[req.body] if req.body is not None else rng.pick(_BODIES)
            answer = _answer(rng, req, language, code)
        max_tokens = 4096 if not completion else 2048
        t_end = maker.complete(ev, state.model, in_tok, out_tok, t, load, err, "stop", max_tokens)
        maker.add_exchange(ev, req.text, answer, req.refused, req.flagged, err)
        maker.maybe_feedback(ev, 0.12 if req.refused and not req.flagged else 0.025, 0.96)
        if err is None and rng.uniform() < 0.2:
            ev["metrics"] = {"quality_score": maker.quality_score(0.82, 0.09)}
        stamp(ev, t_end, out)
        history += int(len(req.text) / 3.5 + out_tok)
        t = t_end + rng.lognormal(70.0, 0.8)


def _request(rng: RandomStream, p_refusal: float) -> tuple[_Request, str]:
    """The request, and the programming language the answer is in."""
    flagged = rng.uniform() < 0.004
    language = rng.pick(_LANGUAGES)
    if flagged:
        text = rng.pick(_FLAGGED)
        return _Request(text, flagged=True, refused=rng.uniform() < 0.95, kind=_REQUESTS[0][0]), language
    request_i = rng.integer_between(0, len(_REQUESTS) - 1)
    kind, template = _REQUESTS[request_i]
    task_i = rng.integer_between(0, len(_TASKS) - 1)
    snippet, error, diff = rng.pick(_SNIPPETS), rng.pick(_ERRORS), rng.pick(_DIFFS)
    text = template.format(lang=language, task=_TASKS[task_i], snippet=snippet, error=error, diff=diff,
                           line=snippet.split("\n")[0])
    body = _TASK_BODIES[task_i] if "{task}" in template else None
    if rng.uniform() < 0.03:
        text += f"\n# author: {fill(rng, '{name} <{email}>')}"
    refused = rng.uniform() < p_refusal
    return _Request(text, False, refused, kind, task_i, error, diff, body), language


def _answer(rng: RandomStream, req: _Request, language: str, code: str) -> str:
    """The answer to a request of ``req.kind`` (see corpora/code.json)."""
    kind, error, diff = req.kind, req.error, req.diff
    fence = language.lower()
    explanation = rng.pick(_EXPLANATIONS)
    if kind in ("write", "write_with_tests"):
        lead = rng.pick(_CODE["answer_leads"]).format(task=_TASKS[req.task_i])
        answer = f"{lead}\n```{fence}\n{code}\n```\n{explanation}"
        if kind == "write_with_tests":
            answer += f"\n\nAnd the tests:\n```{fence}\n{_TESTS}\n```"
        return answer
    if kind == "write_tests":
        return f"Here are pytest tests covering the edge cases:\n```python\n{_TESTS}\n```\n{explanation}"
    if kind in ("explain_error", "ci_error"):
        cause = _CODE["error_causes"][error]
        return rng.pick(_CODE["error_answers"]).format(error=error, cause=cause, cause_capitalised=capitalise(cause),
                                                       code=code, explanation=explanation)
    if kind in _CODE["rewrites"]:
        note = rng.pick(_NOTES)
        return f"Here's {_CODE['rewrites'][kind]}:\n```python\n{code}\n```\nNote: {note[0].lower()}{note[1:]}"
    if kind == "explain":
        return f"This snippet {rng.pick(_CODE['snippet_explanations'])}. " + explanation
    # review_diff: comment on the first changed line
    first = diff.split("\n")[1].lstrip("+").strip() if "\n" in diff else diff
    return (f"One issue: `{first}` changes behaviour for existing callers. {explanation}\n\n"
            "Otherwise the change looks fine to me.")
