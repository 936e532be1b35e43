"""Unit tests: the tool/entity map and the wrong-entity detectors (per run and rate view)."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from detectors.wrong_entity_action import WrongEntityAction, WrongEntityParams, hash_entity
from detectors.wrong_entity_rate import WrongEntityRate, WrongEntityRateParams
from semwatch.contract import RunEvent, ToolCall, parse_ts
from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import DetectorEnv
from semwatch.engine.tools import ToolMap, ids_in_result, name_words

T0 = 1_767_600_000.0
TOOLS_YAML = """
tools:
  get_order: {side_effect: false}
  refund_order: {side_effect: true, money_moving: true, entity_args: {order_id: order_id, user_id: user_id}}
  send_email: {side_effect: true, entity_args: {user_id: user_id}}
  notify: {side_effect: true, entity_args: {"target.user": user_id}}
  update_profile: {side_effect: false}
"""


def tools() -> ToolMap:
    return ToolMap.model_validate(yaml.safe_load(TOOLS_YAML))


def engine(**params) -> Engine:
    p = WrongEntityParams.model_validate({"name": "we", "type": "wrong_entity_action", **params})
    env = DetectorEnv(tools=tools(), runbook_base_url="https://runbooks.test")
    return Engine([WrongEntityAction(p, env)], EngineOptions(allowed_lateness_s=0, tick_s=5))


def ev(i: int, run: str, *calls: dict, subject=None, ts=None, **extra) -> RunEvent:
    data = {"schema_version": "1", "event_id": f"e{i}", "run_id": run, "ts": T0 + i if ts is None else ts,
            "app": "order-agent", "route": "refunds", "model": "m", "tool_calls": list(calls) or None}
    if subject is not None:
        data["subject"] = subject
    data.update(extra)
    return RunEvent.model_validate(data)


def call(name: str, result=None, side_effect=None, **args) -> dict:
    c = {"name": name, "call_id": f"call_{name}", "arguments": args}
    if result is not None:
        c["result"] = result
    if side_effect is not None:
        c["side_effect"] = side_effect
    return c


def run_all(eng: Engine, events) -> list:
    out = []
    for e in events:
        out.extend(eng.process(e))
    return out


# -- tool map ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,side,money", [
    ("refund_order", True, True), ("refundOrder", True, True), ("issue-refund", True, True),
    ("CancelSubscription", True, False), ("send_email", True, False), ("transferFunds", True, True),
    ("get_order", False, False), ("search_orders", False, False), ("get_refund_status", False, False),
    ("prepay_quote", False, False),  # "prepay" is not the word "pay"
    ("sender_lookup", False, False), ("payment_history", False, False), ("close_ticket", True, False),
])
def test_verb_defaults(name, side, money):
    info = ToolMap().info(name)
    assert (info.side_effect, info.side_effect and info.money_moving) == (side, money)


@pytest.mark.parametrize("name,side,source", [
    # Writes whose names hold no verb of any list: checked because unknown tools are writes.
    ("frobnicate_account", True, "unknown-write"), ("zorp_widget", True, "unknown-write"),
    # Reads recognised by a read verb or a read noun anywhere in the name.
    ("account_overview_lookup", False, "read-word"), ("ticket_status", False, "read-word"),
    ("web_search", False, "read-word"), ("think", False, "read-verb"),
    # Writes that today's verbs did not name.
    ("exchange_item", True, "verb"), ("rebook_flight", True, "verb"), ("approve_claim", True, "verb"),
])
def test_unknown_tools_are_writes_and_say_why(name, side, source):
    info = ToolMap().info(name)
    assert (info.side_effect, info.source) == (side, source)
    reads = ToolMap.model_validate({"defaults": {"unknown_tools": "read"}}).info(name)
    assert reads.side_effect == (side and source != "unknown-write")


def test_an_unlisted_write_on_another_entity_is_caught_with_its_reason():
    """A vocabulary that no config or constant names: the call is scope-checked all the same."""
    p = WrongEntityParams.model_validate({"name": "we", "type": "wrong_entity_action"})
    env = DetectorEnv(tools=ToolMap(), runbook_base_url="https://runbooks.test")
    eng = Engine([WrongEntityAction(p, env)], EngineOptions(allowed_lateness_s=0, tick_s=5))
    out = run_all(eng, [
        ev(1, "r1", call("frobnicate_account", account_id="acc_1"), subject={"account_id": ["acc_1"]}),
        ev(2, "r1", call("frobnicate_account", account_id="acc_9")),
    ])
    assert [i.event_action for i in out] == ["trigger"]
    [offending] = out[0].evidence["calls"]
    assert offending["tool"] == "frobnicate_account" and offending["side_effect_from"] == "unknown-write"
    quiet = WrongEntityAction(p, DetectorEnv(tools=ToolMap.model_validate({"defaults": {"unknown_tools": "read"}})))
    eng = Engine([quiet], EngineOptions(allowed_lateness_s=0, tick_s=5))
    assert run_all(eng, [ev(1, "r1", call("frobnicate_account", account_id="acc_1"),
                            subject={"account_id": ["acc_1"]}),
                         ev(2, "r1", call("frobnicate_account", account_id="acc_9"))]) == []


def test_name_words_split_all_cases():
    assert name_words("billing.refundOrder-v2") == ["billing", "refund", "order", "v2"]
    assert name_words("HTTPSendMail") == ["http", "send", "mail"]


def test_precedence_event_over_config_over_verbs():
    tm = tools()
    # config says update_profile is read-only although its verb says otherwise
    assert tm.side_effect(ToolCall(name="update_profile")) == (False, "config")
    assert tm.side_effect(ToolCall(name="update_cart")) == (True, "verb")
    # the event's own flag wins over both
    assert tm.side_effect(ToolCall(name="update_cart", side_effect=False)) == (False, "event")
    assert tm.side_effect(ToolCall(name="get_order", side_effect=True)) == (True, "event")


def test_entity_arguments_inferred_and_configured():
    tm = tools()
    inferred = tm.entity_values(ToolCall(name="cancel_order", arguments={
        "order_ids": ["#W1", 7, None], "trace_id": "t", "reason": "x", "user_id": 17.0}))
    assert inferred == [("order_ids", "order_id", "#W1"), ("order_ids", "order_id", "7"),
                        ("user_id", "user_id", "17")]
    # configured tools use exactly their entity_args (order_id is not checked for send_email)
    assert tm.entity_values(ToolCall(name="send_email", arguments={"user_id": "u1", "order_id": "#W9"})) \
        == [("user_id", "user_id", "u1")]
    assert tm.entity_values(ToolCall(name="notify", arguments={"target": {"user": "u2"}})) \
        == [("target.user", "user_id", "u2")]


def test_tool_map_rejects_unknown_fields_with_location():
    with pytest.raises(ValidationError) as err:
        ToolMap.model_validate({"tools": {"refund_order": {"side_efect": True}}})
    assert err.value.errors()[0]["loc"] == ("tools", "refund_order", "side_efect")
    with pytest.raises(ValidationError) as err:
        ToolMap.model_validate({"tools": {"x": {"entity_args": {"a": "not a type"}}}})
    assert err.value.errors()[0]["loc"][:3] == ("tools", "x", "entity_args")


def test_ids_in_result_nested_and_plural():
    result = {"orders": [{"order_id": "#W3", "lines": [{"sku_id": "s1"}]}, {"id": "#W4"}],
              "user": {"id": "u1", "order_ids": ["#W5"]}, "total": 3}
    assert ids_in_result(result) == [("order_id", "#W3"), ("sku_id", "s1"), ("order_id", "#W4"),
                                     ("user_id", "u1"), ("order_id", "#W5")]
    assert ids_in_result(result, wanted={"user_id"}) == [("user_id", "u1")]


# -- per-run detector ----------------------------------------------------------------------------------
def test_in_scope_actions_raise_nothing():
    eng = engine()
    events = [
        ev(0, "r1", call("get_order", result={"order_id": "#W1"}, order_id="#W1"),
           subject={"user_id": ["u1"], "order_id": ["#W1"]}),
        ev(1, "r1", call("refund_order", order_id="#W1", user_id="u1", amount=5)),
        ev(2, "r1", call("send_email", user_id="u1", to="jane@example.com")),
    ]
    assert run_all(eng, events) == []


def test_out_of_scope_refund_is_sev1_at_the_event_with_hashed_evidence():
    eng = engine()
    out = run_all(eng, [
        ev(0, "r1", subject={"user_id": ["u1"], "order_id": ["#W1"]}),  # subject on the first event only
        ev(30, "r1", call("refund_order", order_id="#W999", user_id="u1", amount=12.5, reason="secret note")),
    ])
    assert len(out) == 1
    inc = out[0]
    assert (inc.event_action, inc.kind, inc.severity) == ("trigger", "wrong_entity_action", "SEV-1")
    assert parse_ts(inc.detected_at) == parse_ts(inc.window_start) == parse_ts(inc.window_end) == T0 + 30
    assert inc.segment == {"app": "order-agent", "route": "refunds"}
    assert inc.dedup_key.startswith("we/")
    assert inc.evidence["run_ids"] == ["r1"] and inc.evidence["event_ids"] == ["e30"]
    [c] = inc.evidence["calls"]
    assert c == {"tool": "refund_order", "call_id": "call_refund_order", "argument": "order_id",
                 "entity_type": "order_id", "entity": hash_entity("#W999"), "money_moving": True,
                 "side_effect_from": "config"}
    text = inc.to_json()
    for secret in ("#W999", "secret note", "12.5"):
        assert secret not in text
    assert inc.runbook_url == "https://runbooks.test/wrong_entity_action"


def test_offending_runs_of_one_segment_are_one_incident_that_collects_them():
    eng = engine()
    subj = {"user_id": ["u1"]}
    out = run_all(eng, [
        ev(0, "r1", call("send_email", user_id="u2"), subject=subj),
        ev(1, "r1", call("send_email", user_id="u3")),  # the same run again: counted once
        ev(2, "r2", call("send_email", user_id="u9"), subject=subj),
    ])
    assert [i.event_action for i in out] == ["trigger"]  # r2 joined the open incident: no page
    assert out[0].evidence["run_ids"] == ["r1"]
    resolved = eng.advance_to(T0 + 2 + 3600 + 60)
    assert [i.event_action for i in resolved] == ["resolve"]
    assert resolved[0].dedup_key == out[0].dedup_key
    assert resolved[0].evidence["offending_runs"] == 2 and resolved[0].evidence["run_ids"] == ["r1", "r2"]


def test_a_twenty_minute_wrong_entity_incident_is_one_incident_that_escalates():
    """12 runs on one route refund other customers' orders over 20 minutes: one incident (it was
    12, one per run), whose severity rises at 5 offending runs; updates keep its id."""
    eng = engine()
    events = []
    for k in range(12):
        events.append(ev(10 * k, f"run-{k}", call("send_email", user_id=f"x{k}"),
                         subject={"user_id": [f"u{k}"]}, ts=T0 + 100 * k))
    out = run_all(eng, events)
    assert [i.event_action for i in out] == ["trigger", "trigger"]
    assert [i.severity for i in out] == ["SEV-2", "SEV-1"]  # escalated at the 5th run
    assert len({i.dedup_key for i in out}) == 1 and len({i.incident_id for i in out}) == 1
    assert out[1].evidence["offending_runs"] == 5


def test_earlier_results_widen_scope_but_out_of_scope_reads_do_not():
    eng = engine()
    subj = {"user_id": ["u1"], "order_id": []}  # a listed type with no ids: only what reads return
    out = run_all(eng, [
        ev(0, "r1", call("search_orders", user_id="u1",
                         result={"orders": [{"order_id": "#W3"}, {"order_id": "#W4"}]}), subject=subj),
        ev(1, "r1", call("refund_order", order_id="#W4", user_id="u1")),
        # a read of a stranger's order returns that order, which must not make it "in scope"
        ev(2, "r2", call("get_order", order_id="#W7", result={"order_id": "#W7"}), subject=subj),
        ev(3, "r2", call("refund_order", order_id="#W7", user_id="u1")),
    ])
    assert [i.evidence["run_ids"] for i in out] == [["r2"]]


def test_widening_can_be_switched_off_and_is_ordered_within_an_event():
    subj = {"user_id": ["u1"], "order_id": []}
    events = [ev(0, "r1", call("search_orders", user_id="u1", result={"orders": [{"order_id": "#W3"}]}),
                 call("refund_order", order_id="#W3", user_id="u1"), subject=subj)]
    assert run_all(engine(), events) == []
    assert len(run_all(engine(widen_from_results=False), events)) == 1
    # a result only widens for *later* calls
    later = [ev(0, "r1", call("refund_order", order_id="#W3", user_id="u1"),
                call("search_orders", user_id="u1", result={"orders": [{"order_id": "#W3"}]}), subject=subj)]
    assert len(run_all(engine(), later)) == 1


def test_types_absent_from_subject_are_checked_only_when_strict():
    events = [ev(0, "r1", call("cancel_order", order_id="#W5", user_id="u1"), subject={"user_id": ["u1"]})]
    assert run_all(engine(), events) == []
    [inc] = run_all(engine(strict=True), events)
    assert inc.evidence["calls"][0]["argument"] == "order_id"
    assert inc.severity == "SEV-2"  # cancel does not move money


def test_no_subject_no_check_and_read_only_calls_never_alarm():
    events = [ev(0, "r1", call("refund_order", order_id="#W5", user_id="u1")),
              ev(1, "r2", call("get_order", order_id="#W5"), subject={"order_id": ["#W1"]}),
              ev(2, "r3", call("refund_order", side_effect=False, order_id="#W5"), subject={"order_id": ["#W1"]})]
    assert run_all(engine(), events) == []


def test_event_side_effect_flag_makes_unknown_tool_checked():
    events = [ev(0, "r1", call("do_thing", side_effect=True, account_id="a2"), subject={"account_id": ["a1"]})]
    [inc] = run_all(engine(), events)
    assert inc.evidence["calls"][0]["side_effect_from"] == "event"


def test_auto_resolve_after_configured_event_time():
    eng = engine(auto_resolve_s=600)
    out = run_all(eng, [ev(0, "r1", call("send_email", user_id="u2"), subject={"user_id": ["u1"]}),
                        ev(300, "other", ts=T0 + 300)])
    assert [i.event_action for i in out] == ["trigger"]
    out = eng.process(ev(700, "other", ts=T0 + 700))
    assert [i.event_action for i in out] == ["resolve"]
    assert parse_ts(out[0].detected_at) == T0 + 600
    assert out[0].severity == "SEV-2" and out[0].evidence["run_ids"] == ["r1"]
    # never with 0
    eng = engine(auto_resolve_s=0)
    out = run_all(eng, [ev(0, "r1", call("send_email", user_id="u2"), subject={"user_id": ["u1"]})])
    out += eng.advance_to(T0 + 10 * 86400)
    assert [i.event_action for i in out] == ["trigger"]


def test_run_state_is_bounded_and_expires():
    eng = engine(idle_ttl_s=60, max_scope_ids=3)
    many = {"orders": [{"order_id": f"#W{i}"} for i in range(100)]}
    eng.process(ev(0, "r1", call("search_orders", result=many), subject={"order_id": []}))
    state = next(v for k, v in eng.data.items() if k.startswith("we|"))
    assert state.n_ids == 3
    eng.advance_to(T0 + 7200)
    assert not [k for k in eng.data if k.startswith("we|")]


def test_params_validation_names_the_field():
    with pytest.raises(ValidationError) as err:
        WrongEntityParams.model_validate({"name": "we", "type": "wrong_entity_action", "auto_resolve_s": -1})
    assert err.value.errors()[0]["loc"] == ("auto_resolve_s",)
    with pytest.raises(ValidationError) as err:
        WrongEntityRateParams.model_validate({"name": "r", "type": "wrong_entity_rate", "above": 0.1,
                                              "clear": 0.2})
    assert err.value.errors()[0]["loc"] == ("clear",)


# -- rate view ---------------------------------------------------------------------------------------------
def rate_engine(**params) -> Engine:
    p = WrongEntityRateParams.model_validate({"name": "wer", "type": "wrong_entity_rate", "window_s": 600,
                                              "bucket_s": 60, "min_volume": 10, "above": 0.2,
                                              "clear": 0.05, "clear_for_s": 120, **params})
    return Engine([WrongEntityRate(p, DetectorEnv(tools=tools()))], EngineOptions(allowed_lateness_s=0))


def rate_traffic(minutes: int, bad_every: int, start_min: int = 0) -> list[RunEvent]:
    out = []
    for m in range(start_min, start_min + minutes):
        for k in range(4):
            i = m * 4 + k
            bad = bad_every and i % bad_every == 0
            out.append(ev(i, f"r{i}", call("refund_order", order_id="#W2" if bad else "#W1", user_id="u1"),
                          subject={"user_id": ["u1"], "order_id": ["#W1"]}, ts=T0 + 60 * m + 10 * k))
    return out


def test_rate_fires_on_a_systematic_problem_and_resolves_with_hysteresis():
    eng = rate_engine()
    out = run_all(eng, rate_traffic(30, 0))
    assert out == []
    out = run_all(eng, rate_traffic(10, 2, start_min=30))  # 50 % of refunds out of scope
    triggers = [i for i in out if i.event_action == "trigger"]
    assert len(triggers) == 1
    t = triggers[0]
    assert (t.kind, t.severity, t.detector) == ("wrong_entity_action", "SEV-1", "wer")
    assert t.observed > 0.2 and t.threshold == 0.2 and t.evidence["run_ids"]
    assert t.segment == {"app": "order-agent", "route": "refunds"}
    # back to 10 % (between clear 5 % and above 20 %): still firing
    out = run_all(eng, rate_traffic(20, 10, start_min=40))
    assert [i.event_action for i in out] == []
    out = run_all(eng, rate_traffic(30, 0, start_min=60))
    assert [i.event_action for i in out] == ["resolve"]
    assert out[0].dedup_key == t.dedup_key


def test_rate_needs_min_volume():
    eng = rate_engine(min_volume=500)
    out = run_all(eng, rate_traffic(10, 1)) + eng.advance_to(T0 + 7200)
    assert out == []


def test_incident_json_has_no_raw_ids_or_text():
    eng = engine()
    events = [ev(0, "r1", call("send_email", user_id="jane.doe@example.com", body="hello Jane"),
                 subject={"user_id": ["u1"]}, request_text="I am jane.doe@example.com")]
    [inc] = run_all(eng, events)
    blob = json.dumps(inc.to_dict())
    assert "@" not in blob and "hello Jane" not in blob
