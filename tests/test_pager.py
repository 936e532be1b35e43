"""The pager agent's delivery logic (sinks/pager/: dispatch, delivery, alertmanager, pagerduty),
without a broker, against a real local HTTP receiver (http.server in a thread): exact payloads for
both targets, retries and their bounds, dedup, and the metrics in a private registry."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time

import pydantic
import pytest
from support import AM_PATH, PD_PATH, Receiver

from semwatch.contract import Incident, format_ts
from semwatch.settings import SettingsError
from sinks.pager.agent import add_arguments, build_targets, pager_settings, target_names
from sinks.pager.alertmanager import AlertmanagerTarget
from sinks.pager.delivery import HttpSender, RetryPolicy
from sinks.pager.dispatch import Pager
from sinks.pager.memory import DeliveredKeys, KeyState
from sinks.pager.metrics import OUTCOMES, PagerMetrics
from sinks.pager.pagerduty import PagerDutyTarget
from sinks.pager.records import MalformedIncident, parse_incident

FAST = RetryPolicy(timeout_s=2.0, backoff_base_s=0.01, backoff_max_s=0.05)


def make_pager(receiver: Receiver, metrics: PagerMetrics, *, policy: RetryPolicy = FAST,
               targets=("alertmanager", "pagerduty")) -> tuple[Pager, HttpSender]:
    sender = HttpSender(metrics, policy)
    built = []
    if "alertmanager" in targets:
        built.append(AlertmanagerTarget(receiver.url, sender))
    if "pagerduty" in targets:
        built.append(PagerDutyTarget(receiver.url, "R0UTINGKEY", sender))
    return Pager(built, metrics), sender


def run(coro):
    return asyncio.run(coro)


def incident(action: str = "trigger", **over) -> Incident:
    base = dict(
        incident_id="inc-1", dedup_key="false-refusal-spike/abc123", event_action=action, severity="SEV-1",
        kind="false_refusal_spike", detector="false-refusal-spike",
        summary="refusal rate 42% (baseline 3%) on app=support-bot route=billing",
        segment={"app": "support-bot", "route": "billing", "model": "gpt-4o-mini", "prompt_version": "v2",
                 "tenant": "acme"},
        observed=0.42, baseline=0.03, threshold=0.13, score=7.5,
        window_start="2026-01-05T10:00:00.000Z", window_end="2026-01-05T10:03:00.000Z",
        detected_at="2026-01-05T10:03:00.000Z",
        evidence={"run_ids": ["r1", "r2"], "event_ids": ["e1"], "excerpts": ["[redacted]"]},
        suspected_changes=[{"field": "prompt_version", "from": "v1", "to": "v2",
                            "first_seen": "2026-01-05T09:58:00.000Z"}],
        runbook_url="https://runbooks.example.com/semwatch/false_refusal_spike")
    if action == "resolve":
        base.update(incident_id="inc-1-resolve", summary="refusal rate back to 3% on app=support-bot",
                    detected_at="2026-01-05T10:20:00.000Z", window_end="2026-01-05T10:20:00.000Z",
                    suspected_changes=[])
    base.update(over)
    return Incident.model_validate(base)


def pages(metrics: PagerMetrics, target: str, action: str, outcome: str) -> float:
    return metrics.registry.get_sample_value(
        "semwatch_pages_total", {"target": target, "event_action": action, "outcome": outcome})


def attempts(metrics: PagerMetrics, target: str) -> float:
    return metrics.registry.get_sample_value("semwatch_page_attempts_total", {"target": target})


AM_LABELS = {
    "alertname": "SemwatchIncident", "kind": "false_refusal_spike", "severity": "critical",
    "semwatch_severity": "SEV-1", "detector": "false-refusal-spike", "dedup_key": "false-refusal-spike/abc123",
    "group_key": "false-refusal-spike/abc123",  # no group_key in the record: a problem of its own
    "source": "semwatch-pager", "app": "support-bot", "route": "billing", "model": "gpt-4o-mini",
    "prompt_version": "v2",
}


# -- payload mapping ---------------------------------------------------------------------------------
def test_alertmanager_trigger_and_resolve_payloads(receiver, metrics):
    pager, sender = make_pager(receiver, metrics, targets=("alertmanager",))
    try:
        assert run(pager.handle(incident())) == {"alertmanager": "delivered"}
        assert run(pager.handle(incident("resolve"))) == {"alertmanager": "delivered"}
    finally:
        sender.close()
    trigger, resolve = receiver.bodies(AM_PATH)
    assert trigger == [{
        "labels": AM_LABELS,  # tenant is not allow-listed: not a label
        "annotations": {
            "summary": "refusal rate 42% (baseline 3%) on app=support-bot route=billing",
            "description": "observed 0.42, baseline 0.03, threshold 0.13, score 7.5. "
                           "window 2026-01-05T10:00:00.000Z to 2026-01-05T10:03:00.000Z (event time). "
                           "segment app=support-bot, model=gpt-4o-mini, prompt_version=v2, route=billing, "
                           "tenant=acme. suspected changes: prompt_version v1 -> v2 "
                           "(first seen 2026-01-05T09:58:00.000Z).",
            "incident_id": "inc-1",
            "runbook_url": "https://runbooks.example.com/semwatch/false_refusal_spike",
        },
        "startsAt": "2026-01-05T10:03:00.000Z",
    }]
    assert resolve == [{
        "labels": AM_LABELS,  # the same identity as the trigger
        "annotations": {
            "summary": "refusal rate back to 3% on app=support-bot",
            "description": "observed 0.42, baseline 0.03, threshold 0.13, score 7.5. "
                           "window 2026-01-05T10:00:00.000Z to 2026-01-05T10:20:00.000Z (event time). "
                           "segment app=support-bot, model=gpt-4o-mini, prompt_version=v2, route=billing, "
                           "tenant=acme.",
            "incident_id": "inc-1-resolve",
            "runbook_url": "https://runbooks.example.com/semwatch/false_refusal_spike",
        },
        "startsAt": "2026-01-05T10:03:00.000Z",
        "endsAt": "2026-01-05T10:20:00.000Z",  # Alertmanager resolves by endsAt
    }]


def test_alertmanager_severities_and_bounded_labels(receiver, metrics):
    pager, sender = make_pager(receiver, metrics, targets=("alertmanager",))
    try:
        for i, (sev, expected) in enumerate((("SEV-1", "critical"), ("SEV-2", "error"), ("SEV-3", "warning"))):
            run(pager.handle(incident(incident_id=f"i{i}", dedup_key=f"d/{i}", severity=sev,
                                      segment={"app": "x" * 500, "run_id": "r-17", "route": ""})))
            (alert,) = receiver.bodies(AM_PATH)[-1]
            assert alert["labels"]["severity"] == expected and alert["labels"]["semwatch_severity"] == sev
            assert len(alert["labels"]["app"]) == 128  # values truncated
            assert "run_id" not in alert["labels"] and "route" not in alert["labels"]
    finally:
        sender.close()


def test_alertmanager_times_are_clamped_to_now(receiver, metrics):
    """Event time ahead of the wall clock must not keep a resolved alert firing (nor be rejected)."""
    pager, sender = make_pager(receiver, metrics, targets=("alertmanager",))
    future = format_ts(time.time() + 7200)
    try:
        run(pager.handle(incident(detected_at=future)))
        run(pager.handle(incident("resolve", detected_at=format_ts(time.time() + 3 * 3600))))
    finally:
        sender.close()
    (trigger,), (resolve,) = receiver.bodies(AM_PATH)
    now = format_ts(time.time())
    assert trigger["startsAt"] <= now
    assert trigger["startsAt"] <= resolve["endsAt"] <= now


def test_alertmanager_resolve_without_trigger_uses_the_record(receiver, metrics):
    """After a restart the pager may see only the resolve: labels come from the resolve record."""
    pager, sender = make_pager(receiver, metrics, targets=("alertmanager",))
    try:
        assert run(pager.handle(incident("resolve"))) == {"alertmanager": "delivered"}
    finally:
        sender.close()
    ((alert,),) = receiver.bodies(AM_PATH)
    assert alert["labels"] == AM_LABELS
    assert alert["startsAt"] == "2026-01-05T10:00:00.000Z" and alert["endsAt"] == "2026-01-05T10:20:00.000Z"


def test_pagerduty_trigger_and_resolve_payloads(receiver, metrics):
    pager, sender = make_pager(receiver, metrics, targets=("pagerduty",))
    try:
        assert run(pager.handle(incident())) == {"pagerduty": "delivered"}
        assert run(pager.handle(incident("resolve"))) == {"pagerduty": "delivered"}
    finally:
        sender.close()
    trigger, resolve = receiver.bodies(PD_PATH)
    assert trigger == {
        "routing_key": "R0UTINGKEY",
        "event_action": "trigger",
        "dedup_key": "false-refusal-spike/abc123",
        "payload": {
            "summary": "refusal rate 42% (baseline 3%) on app=support-bot route=billing",
            "source": "semwatch/app=support-bot,route=billing,model=gpt-4o-mini,prompt_version=v2",
            "severity": "critical",
            "timestamp": "2026-01-05T10:03:00.000Z",
            "component": "false-refusal-spike",
            "group": "support-bot",
            "class": "false_refusal_spike",
            "custom_details": {
                "incident_id": "inc-1",
                "semwatch_severity": "SEV-1",
                "observed": 0.42, "baseline": 0.03, "threshold": 0.13, "score": 7.5,
                "window_start": "2026-01-05T10:00:00.000Z",
                "window_end": "2026-01-05T10:03:00.000Z",
                "segment": {"app": "support-bot", "route": "billing", "model": "gpt-4o-mini",
                            "prompt_version": "v2", "tenant": "acme"},
                "suspected_changes": [{"field": "prompt_version", "from": "v1", "to": "v2",
                                       "first_seen": "2026-01-05T09:58:00.000Z"}],
                "evidence": {"run_ids": ["r1", "r2"], "event_ids": ["e1"]},  # ids only
                "containment": None,  # no rollback target without a suspected change it explains
            },
        },
        "client": "semwatch",
        "links": [{"href": "https://runbooks.example.com/semwatch/false_refusal_spike", "text": "Runbook"}],
    }
    assert resolve == {"routing_key": "R0UTINGKEY", "event_action": "resolve",
                       "dedup_key": "false-refusal-spike/abc123"}


def test_pagerduty_summary_is_bounded(receiver, metrics):
    pager, sender = make_pager(receiver, metrics, targets=("pagerduty",))
    try:
        run(pager.handle(incident(summary="s" * 5000, runbook_url=None, severity="SEV-3")))
    finally:
        sender.close()
    (event,) = receiver.bodies(PD_PATH)
    assert len(event["payload"]["summary"]) == 1024
    assert event["payload"]["severity"] == "warning" and "links" not in event


# -- retries ----------------------------------------------------------------------------------------
def test_retry_on_500_then_success(receiver, metrics):
    receiver.script[PD_PATH] = [(500, "oops", 0.0), (502, "bad gateway", 0.0)]
    pager, sender = make_pager(receiver, metrics, targets=("pagerduty",))
    try:
        assert run(pager.handle(incident())) == {"pagerduty": "delivered"}
    finally:
        sender.close()
    assert len(receiver.bodies(PD_PATH)) == 3
    assert attempts(metrics, "pagerduty") == 3
    assert pages(metrics, "pagerduty", "trigger", "delivered") == 1
    assert metrics.registry.get_sample_value("semwatch_page_delivery_seconds_count") == 1
    assert metrics.registry.get_sample_value(
        "semwatch_pager_last_success_timestamp_seconds", {"target": "pagerduty"}) == pytest.approx(time.time(), abs=30)


def test_retry_on_429_honours_retry_after(receiver, metrics):
    receiver.script[PD_PATH] = [(429, '{"status":"throttle"}', 0.0)]
    pager, sender = make_pager(receiver, metrics, targets=("pagerduty",))
    try:
        assert run(pager.handle(incident())) == {"pagerduty": "delivered"}
    finally:
        sender.close()
    assert attempts(metrics, "pagerduty") == 2


def test_no_retry_on_400_and_body_is_logged(receiver, metrics, caplog):
    receiver.script[PD_PATH] = [(400, '{"status":"invalid event","errors":["routing_key is invalid"]}', 0.0)]
    pager, sender = make_pager(receiver, metrics, targets=("pagerduty",))
    with caplog.at_level(logging.ERROR, logger="semwatch.pager"):
        try:
            assert run(pager.handle(incident())) == {"pagerduty": "rejected"}
        finally:
            sender.close()
    assert len(receiver.bodies(PD_PATH)) == 1
    assert attempts(metrics, "pagerduty") == 1
    assert pages(metrics, "pagerduty", "trigger", "rejected") == 1
    assert "routing_key is invalid" in caplog.text
    assert "R0UTINGKEY" not in caplog.text  # the routing key is never logged


def test_timeout_is_retried(receiver, metrics):
    receiver.script[AM_PATH] = [(200, "", 1.5)]  # answers after the client's 0.3 s timeout
    policy = RetryPolicy(timeout_s=0.3, backoff_base_s=0.01, backoff_max_s=0.05)
    pager, sender = make_pager(receiver, metrics, policy=policy, targets=("alertmanager",))
    try:
        assert run(pager.handle(incident())) == {"alertmanager": "delivered"}
    finally:
        sender.close()
    assert attempts(metrics, "alertmanager") == 2


def test_connection_errors_are_retried_until_the_target_is_up(metrics):
    """No attempt limit and no deadline: a target that is down (connection refused) gets the page
    once it is back."""
    from semwatch.broker import free_port

    port = free_port()
    sender = HttpSender(metrics, FAST)
    pager = Pager([PagerDutyTarget(f"http://127.0.0.1:{port}", "K", sender)], metrics)
    late: list[Receiver] = []
    threading.Timer(1.0, lambda: late.append(Receiver(port))).start()  # up after 1 s: many attempts
    try:
        assert run(pager.handle(incident())) == {"pagerduty": "delivered"}
    finally:
        sender.close()
        for r in late:
            r.close()
    assert attempts(metrics, "pagerduty") > 6  # the old pager gave up after 6
    assert len(late[0].bodies(PD_PATH)) == 1
    assert pages(metrics, "pagerduty", "trigger", "delivered") == 1


def test_a_trigger_is_retried_until_delivered(receiver, metrics):
    receiver.script[AM_PATH] = [(503, "", 0.0)] * 8
    pager, sender = make_pager(receiver, metrics, targets=("alertmanager",))
    try:
        assert run(pager.handle(incident())) == {"alertmanager": "delivered"}
        assert run(pager.target("alertmanager").resend_open()) == 1  # and it is kept open
    finally:
        sender.close()
    assert attempts(metrics, "alertmanager") == 9 + 1


# -- dedup ------------------------------------------------------------------------------------------
def test_duplicates_are_suppressed(receiver, metrics):
    pager, sender = make_pager(receiver, metrics)
    try:
        both = lambda outcome: {"alertmanager": outcome, "pagerduty": outcome}  # noqa: E731
        assert run(pager.handle(incident())) == both("delivered")
        assert run(pager.handle(incident())) == both("duplicate")  # a redelivered record
        # another trigger of the same open problem (e.g. a worker restart re-detected it)
        assert run(pager.handle(incident(incident_id="inc-2"))) == both("duplicate")
        assert run(pager.handle(incident("resolve"))) == both("delivered")
        assert run(pager.handle(incident("resolve"))) == both("duplicate")
        assert run(pager.handle(incident())) == both("duplicate")  # an old trigger, redelivered
        # the same problem again later: a new trigger pages again
        assert run(pager.handle(incident(incident_id="inc-3"))) == both("delivered")
    finally:
        sender.close()
    pd = receiver.bodies(PD_PATH)
    assert [e["event_action"] for e in pd] == ["trigger", "resolve", "trigger"]
    am = receiver.bodies(AM_PATH)
    # Alertmanager got the open alert re-sent for the two duplicates while open (harmless).
    assert ["endsAt" in a[0] for a in am] == [False, False, False, True, False]
    assert pages(metrics, "pagerduty", "trigger", "duplicate") == 3
    assert pages(metrics, "pagerduty", "resolve", "duplicate") == 1
    assert pages(metrics, "pagerduty", "trigger", "delivered") == 2
    assert pages(metrics, "alertmanager", "trigger", "duplicate") == 3


def test_memory_keeps_every_open_key_and_a_bounded_number_of_closed_ones():
    keys = DeliveredKeys(max_closed=3)
    keys.put("open", KeyState(open=True))
    for i in range(5):
        keys.put(f"closed-{i}", KeyState(open=False))
    assert len(keys) == 4 and keys.get("open").open
    assert keys.get("closed-0") == KeyState() and keys.get("closed-4").history == ()
    assert [k for k, _ in keys.items()] == ["open", "closed-2", "closed-3", "closed-4"]


def test_warm_start_restores_open_alerts_without_sending(receiver, metrics):
    pager, sender = make_pager(receiver, metrics)
    try:
        pager.restore_value(incident().to_json().encode())
        pager.restore_value(incident(dedup_key="d/closed").to_json().encode())
        pager.restore_value(incident("resolve", dedup_key="d/closed").to_json().encode())
        assert receiver.requests == []
        assert run(pager.handle(incident())) == {"alertmanager": "duplicate", "pagerduty": "duplicate"}
        am = pager.target("alertmanager")
        assert list(am.open) == ["false-refusal-spike/abc123"]
        assert run(am.resend_open()) == 1
    finally:
        sender.close()
    assert receiver.bodies(PD_PATH) == []
    assert receiver.bodies(AM_PATH)[-1][0]["labels"]["dedup_key"] == "false-refusal-spike/abc123"


def test_open_alerts_are_resent_until_resolved(receiver, metrics):
    pager, sender = make_pager(receiver, metrics, targets=("alertmanager",))
    am = pager.target("alertmanager")
    try:
        run(pager.handle(incident()))
        run(pager.handle(incident(incident_id="b", dedup_key="d/b")))
        assert run(am.resend_open()) == 2
        run(pager.handle(incident("resolve")))
        assert run(am.resend_open()) == 1
    finally:
        sender.close()
    resent = receiver.bodies(AM_PATH)[-1]
    assert [a["labels"]["dedup_key"] for a in resent] == ["d/b"] and "endsAt" not in resent[0]


# -- bad input and configuration ---------------------------------------------------------------------
@pytest.mark.parametrize("value,action", [
    (b"not json", "unknown"), (b"[1, 2]", "unknown"), (None, "unknown"), (b"\xff\xfe", "unknown"),
    (json.dumps({"event_action": "trigger", "dedup_key": "x"}).encode(), "trigger"),
])
def test_malformed_records_are_rejected_not_fatal(receiver, metrics, value, action):
    pager, sender = make_pager(receiver, metrics)
    try:
        assert run(pager.handle_value(value, "t[0]@1")) == {"alertmanager": "rejected", "pagerduty": "rejected"}
    finally:
        sender.close()
    assert receiver.requests == []
    assert pages(metrics, "pagerduty", action, "rejected") == 1


def test_parse_incident_names_the_field():
    bad = incident().to_dict()
    bad["severity"] = "SEV-9"
    with pytest.raises(MalformedIncident, match="severity"):
        parse_incident(json.dumps(bad).encode())


def test_malformed_timestamps_are_rejected():
    bad = incident().to_dict()
    bad["detected_at"] = "yesterday"
    with pytest.raises(MalformedIncident, match="detected_at") as err:
        parse_incident(json.dumps(bad).encode())
    assert err.value.event_action == "trigger"


def test_metric_names_and_labels_are_the_fixed_ones(metrics):
    """config/prometheus/semwatch-rules.yml and the dashboard depend on these names."""
    families = {m.name: m for m in metrics.registry.collect()}
    assert set(families) == {"semwatch_pages", "semwatch_page_attempts", "semwatch_page_delivery_seconds",
                             "semwatch_pager_last_success_timestamp_seconds", "semwatch_pager_undelivered_pages",
                             "semwatch_pager_oldest_undelivered_age_seconds"}
    labels = {s.name: set(s.labels) for m in families.values() for s in m.samples}
    assert labels["semwatch_pages_total"] == {"target", "event_action", "outcome"}
    assert labels["semwatch_page_attempts_total"] == {"target"}
    assert labels["semwatch_page_delivery_seconds_bucket"] == {"le"}
    metrics.last_success.labels("pagerduty").set(1)
    assert {s.name: set(s.labels) for m in metrics.registry.collect() for s in m.samples}[
        "semwatch_pager_last_success_timestamp_seconds"] == {"target"}


def test_cli_without_a_target_is_a_clear_start_up_error(monkeypatch, capsys):
    from semwatch import cli

    for env in ("SEMWATCH_ALERTMANAGER_URL", "SEMWATCH_PAGERDUTY_URL", "SEMWATCH_PAGERDUTY_ROUTING_KEY"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("SEMWATCH_BROKER_URL", "kafka://127.0.0.1:9")
    assert cli.main(["page", "--metrics-port", "0"]) == 2
    assert "no paging target configured" in capsys.readouterr().err


def test_metrics_start_at_zero(metrics):
    for target in ("alertmanager", "pagerduty"):
        for outcome in OUTCOMES:
            assert pages(metrics, target, "trigger", outcome) == 0
        assert attempts(metrics, target) == 0


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


@pytest.fixture
def pager_env(monkeypatch):
    """A clean environment for the pager's settings; returns a setter."""
    import os

    for name in list(os.environ):
        if name.startswith("SEMWATCH_"):
            monkeypatch.delenv(name)
    return monkeypatch.setenv


def test_options_need_a_target_and_take_secrets_only_from_the_environment(pager_env):
    with pytest.raises(SettingsError, match="no paging target"):
        pager_settings(_args())
    with pytest.raises(SettingsError, match="SEMWATCH_PAGERDUTY_ROUTING_KEY"):
        pager_settings(_args(pagerduty_url="http://pd"))
    with pytest.raises(SettingsError, match="segment label"):
        pager_settings(_args(alertmanager_url="http://am", segment_labels="app,severity"))
    pager_env("SEMWATCH_PAGERDUTY_ROUTING_KEY", "secret-key")
    pager_env("SEMWATCH_ALERTMANAGER_URL", "http://am:9093")
    settings = pager_settings(_args())
    assert target_names(settings) == ["alertmanager", "pagerduty"]
    assert "secret-key" not in repr(settings)
    targets = build_targets(settings, HttpSender(PagerMetrics()))
    assert [repr(t) for t in targets] == ["AlertmanagerTarget('http://am:9093/api/v2/alerts')",
                                          "PagerDutyTarget('https://events.pagerduty.com/v2/enqueue')"]
    # a CLI flag beats the environment for URLs; there is no flag for the routing key
    pager_env("SEMWATCH_PAGERDUTY_ROUTING_KEY", "")  # compose passes an unset key as ""
    settings = pager_settings(_args(alertmanager_url="http://other:9093"))
    assert settings.alertmanager_url == "http://other:9093" and target_names(settings) == ["alertmanager"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert not any("routing" in (a.dest or "") for a in parser._actions)


def test_delivery_settings_come_from_the_environment_and_flags_win(pager_env):
    pager_env("SEMWATCH_ALERTMANAGER_URL", "http://am:9093")
    pager_env("SEMWATCH_PAGER__REQUEST_TIMEOUT_S", "3")
    pager_env("SEMWATCH_PAGER__BACKOFF_MAX_S", "7")
    pager_env("SEMWATCH_PAGER__SEGMENT_LABELS", "app, tenant")
    settings = pager_settings(_args(request_timeout_s=9.0))
    assert settings.pager.request_timeout_s == 9.0  # the flag
    assert settings.pager.backoff_max_s == 7.0  # the environment
    assert settings.pager.segment_labels == ("app", "tenant")
    assert settings.pager.resend_interval_s == 60.0  # the default
    with pytest.raises(pydantic.ValidationError):
        settings.pager.request_timeout_s = 1  # frozen
    with pytest.raises(SettingsError, match="SEMWATCH_PAGER__RESEND_INTERVAL_S"):
        pager_settings(_args(resend_interval_s=0.0))
    pager_env("SEMWATCH_ALERTMANAGER_URL", "alertmanager:9093")
    with pytest.raises(SettingsError, match="http:// or https://"):
        pager_settings(_args())


def test_backoff_grows_with_jitter_and_is_capped():
    import random

    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(1)
    delays = [policy.backoff(a, rng) for a in range(1, 7)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(4.0 <= d <= 8.0 for d in delays[3:])
    assert policy.backoff(1, rng, retry_after=3.0) == 3.0
    assert policy.backoff(1, rng, retry_after=300.0) == 8.0
