"""The labelled windows the simulator writes beside its events, one function per kind.

A label is ``{"kind", "start", "end", "segment", ["optional"], ["run_id"], "note"}`` with RFC 3339
times; ``segment`` names the fields a detector should report the incident on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from semwatch.simulator.clock import MINUTE, format_ts, parse_time

if TYPE_CHECKING:
    from semwatch.simulator.routes import Route


def false_refusal_spike(route: Route, model: str, start: float, end: float, bad_version: int,
                        previous_version: int, rate: float) -> dict:
    return {
        "kind": "false_refusal_spike", "start": format_ts(start), "end": format_ts(end),
        "segment": {"app": route.app, "route": route.name, "model": model, "prompt_version": f"v{bad_version}"},
        "note": (f"prompt rollout v{bad_version} on {route.app}/{route.name} refuses ordinary requests at "
                 f"{rate:.0%}; rolled back to v{previous_version}"),
    }


def cost_spike(route: Route, start: float, end: float, old_model: str, new_model: str, price_ratio: float) -> dict:
    return {
        "kind": "cost_spike", "start": format_ts(start), "end": format_ts(end),
        "segment": {"app": route.app, "route": route.name},
        "note": f"route switched {old_model} -> {new_model} (~{price_ratio:.0f}x price per token), then back",
    }


def wrong_entity_action(route: Route, event: dict, tool_call: dict) -> dict:
    ts = event["ts"]
    return {
        "kind": "wrong_entity_action", "start": ts, "end": ts,
        "segment": {"app": route.app, "route": route.name, "model": event["model"]},
        "run_id": event["run_id"],
        "note": (f"{tool_call['name']} on {tool_call['arguments'].get('order_id')}, an order of another customer "
                 f"(subject {event['subject']['user_id'][0]})"),
    }


def token_spike(route: Route, first: dict, last: dict, pace: str, steps: int) -> dict:
    minutes = (parse_time(last["ts"]) - parse_time(first["ts"])) / 60
    return {
        "kind": "token_spike", "start": first["ts"], "end": last["ts"],
        "segment": {"app": route.app, "route": route.name, "model": first["model"]},
        "run_id": first["run_id"],
        "note": (f"runaway agent loop ({pace}): {steps} steps in {minutes:.0f} min, "
                 f"input tokens up to {last['input_tokens']}"),
    }


def provider_burst(provider: str, start: float, end: float, share: float) -> dict:
    """Real but minor: an error-rate rule may report it, a semantic detector should not."""
    return {
        "kind": "threshold", "start": format_ts(start), "end": format_ts(end),
        "segment": {"provider": provider}, "optional": True,
        "note": f"provider {provider} rate-limits about {share:.0%} more of its calls for "
                f"{(end - start) / MINUTE:.0f} min",
    }


def malformed_tool_call(route: Route, start: float, end: float, old_model: str, new_model: str,
                        share: float) -> dict:
    return {
        "kind": "malformed_tool_call", "start": format_ts(start), "end": format_ts(end),
        "segment": {"app": route.app, "route": route.name, "model": new_model},
        "note": (f"route switched {old_model} -> {new_model}, which breaks about {share:.0%} of its tool calls "
                 "(truncated JSON, empty or placeholder ids); switched back"),
    }


def complaint_cluster(route: Route, start: float, end: float, theme: str, share: float) -> dict:
    return {
        "kind": "complaint_cluster", "start": format_ts(start), "end": format_ts(end),
        "segment": {"app": route.app, "route": route.name},
        "note": f"users complain about '{theme}' on about {share:.0%} of answers",
    }


def grounding_drop(route: Route, start: float, end: float, bad_version: int, previous_version: int,
                   drop: float) -> dict:
    return {
        "kind": "grounding_drop", "start": format_ts(start), "end": format_ts(end),
        "segment": {"app": route.app, "route": route.name},
        "note": (f"retrieval change shipped as prompt v{bad_version}: groundedness about {drop:.2f} lower; "
                 f"rolled back to v{previous_version}"),
    }
