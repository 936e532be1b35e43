"""The pager's Alertmanager client against the REAL Alertmanager binary.

Alertmanager routes everything to a webhook receiver (a local HTTP server in this test) with short
group_wait / group_interval and ``send_resolved: true``. A trigger delivered through the pager must
arrive at the webhook as a firing alert with the right labels, and the resolve as ``resolved``.

The binary comes with the Debian package ``prometheus-alertmanager``. A missing binary FAILS
(a skipped paging test looks green and lets broken paging through).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from semwatch.broker import free_port
from semwatch.contract import Incident, format_ts, parse_ts
from sinks.pager.alertmanager import AlertmanagerTarget
from sinks.pager.delivery import HttpSender, RetryPolicy
from sinks.pager.dispatch import Pager
from sinks.pager.metrics import PagerMetrics

BINARY = "prometheus-alertmanager"


class Webhook:
    """Alertmanager webhook receiver: keeps every notification (a JSON object with ``alerts``)."""

    def __init__(self):
        self.notifications: list[dict] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook.lock:
                    hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def alerts(self) -> list[dict]:
        with self.lock:
            return [a for n in self.notifications for a in n.get("alerts", [])]

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in self.alerts():
                if predicate(alert):
                    return alert
            time.sleep(0.1)
        raise AssertionError(f"webhook did not receive {what} within {timeout:.0f}s; got {self.alerts()}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def alertmanager_binary() -> str:
    path = shutil.which(BINARY)
    if path is None:
        pytest.fail(f"`{BINARY}` is not on PATH. Install the Debian package prometheus-alertmanager "
                    f"(apt-get update && apt-get install -y prometheus-alertmanager); this test must "
                    f"not be skipped.", pytrace=False)
    return path


class Alertmanager:
    """The real Alertmanager on a free port, clustering off, routing everything to one webhook."""

    def __init__(self, workdir: Path, webhook_url: str, group_by: tuple[str, ...] = ("alertname", "dedup_key", "kind")):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(
            "route:\n"
            "  receiver: hook\n"
            f"  group_by: [{', '.join(group_by)}]\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: {webhook_url}\n"
            "        send_resolved: true\n")
        self.log_path = workdir / "alertmanager.log"
        (workdir / "am-data").mkdir(exist_ok=True)
        self.cmd = [alertmanager_binary(), f"--config.file={self.config}",
                    f"--storage.path={workdir / 'am-data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address="]
        self.proc = None

    def start(self, timeout: float = 30.0) -> "Alertmanager":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"alertmanager not ready within {timeout:.0f}s:\n{self.log()}")

    def alerts(self) -> list[dict]:
        return json.loads(urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5).read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def alertmanager(tmp_path, webhook):
    am = Alertmanager(tmp_path, webhook.url).start()
    yield am
    am.stop()


T0 = time.time() - 600


def incident(action: str) -> Incident:
    t0 = T0
    record = dict(
        incident_id=f"inc-{action}", dedup_key="wrong-entity-action/5ee1b0c2", event_action=action,
        severity="SEV-1", kind="wrong_entity_action", detector="wrong-entity-action",
        summary="money-moving refund_order acted on a order_id outside run r1's subject",
        segment={"app": "order-agent", "route": "refunds"}, observed=1.0, threshold=0.0, score=1.0,
        window_start=format_ts(t0), window_end=format_ts(t0), detected_at=format_ts(t0),
        evidence={"run_ids": ["r1"], "event_ids": ["e1"]},
        runbook_url="https://runbooks.example.com/semwatch/wrong_entity_action")
    if action == "resolve":
        record.update(detected_at=format_ts(t0 + 300), window_end=format_ts(t0 + 300),
                      summary="auto-resolved after 5m")
    return Incident.model_validate(record)


def test_trigger_and_resolve_reach_the_webhook_through_real_alertmanager(alertmanager, webhook):
    metrics = PagerMetrics(targets=["alertmanager"])
    sender = HttpSender(metrics, RetryPolicy(timeout_s=5, backoff_base_s=0.2))
    pager = Pager([AlertmanagerTarget(alertmanager.url, sender)], metrics)
    key = "wrong-entity-action/5ee1b0c2"
    trigger, resolve = incident("trigger"), incident("resolve")
    try:
        assert asyncio.run(pager.handle(trigger)) == {"alertmanager": "delivered"}
        firing = webhook.wait_for(lambda a: a["labels"].get("dedup_key") == key and a["status"] == "firing",
                                  30, "the firing alert")
        assert firing["labels"] == {
            "alertname": "SemwatchIncident", "severity": "critical", "semwatch_severity": "SEV-1",
            "kind": "wrong_entity_action", "detector": "wrong-entity-action", "dedup_key": key,
            "group_key": key, "source": "semwatch-pager", "app": "order-agent", "route": "refunds"}
        assert firing["annotations"]["runbook_url"] == "https://runbooks.example.com/semwatch/wrong_entity_action"
        assert "refund_order" in firing["annotations"]["summary"]
        (active,) = [a for a in alertmanager.alerts() if a["labels"].get("dedup_key") == key]
        assert active["status"]["state"] == "active"

        # Re-sending the open alert (what the pager does every --resend-interval-s) changes nothing.
        assert asyncio.run(pager.target("alertmanager").resend_open()) == 1

        assert asyncio.run(pager.handle(resolve)) == {"alertmanager": "delivered"}
        resolved = webhook.wait_for(lambda a: a["labels"].get("dedup_key") == key and a["status"] == "resolved",
                                    30, "the resolved alert")
        assert resolved["labels"] == firing["labels"]
        # Alertmanager prints times its own way (trailing zeros trimmed): compare instants.
        assert parse_ts(resolved["startsAt"]) == pytest.approx(parse_ts(trigger.detected_at), abs=0.001)
        # endsAt = the resolve's detected_at
        assert parse_ts(resolved["endsAt"]) == pytest.approx(parse_ts(resolve.detected_at), abs=0.001)
    finally:
        sender.close()
    firing_notes = [a for a in webhook.alerts() if a["status"] == "firing"]
    assert len(firing_notes) == 1, "the re-send must not notify again"
    assert metrics.registry.get_sample_value(
        "semwatch_pages_total", {"target": "alertmanager", "event_action": "resolve", "outcome": "delivered"}) == 1


def test_alertmanager_rejects_a_bad_alert_and_the_pager_does_not_retry(alertmanager):
    """A 4xx from the real Alertmanager (here: an invalid label name) is rejected, not retried."""
    metrics = PagerMetrics(targets=["alertmanager"])
    sender = HttpSender(metrics, RetryPolicy(timeout_s=5, backoff_base_s=0.2))
    try:
        delivery = asyncio.run(sender.post_json("alertmanager", f"{alertmanager.url}/api/v2/alerts",
                                                [{"labels": {"bad-label": "x"}}]))
    finally:
        sender.close()
    assert delivery.outcome == "rejected" and delivery.status == 400
    assert metrics.registry.get_sample_value("semwatch_page_attempts_total", {"target": "alertmanager"}) == 1


def test_the_incidents_of_one_problem_are_one_notification(tmp_path, webhook):
    """With the repository's grouping (config/alertmanager/alertmanager.yml), three incidents of one
    problem reach the receiver as one notification listing all three; an incident of its own is
    another notification."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "alertmanager" /
                             "alertmanager.yml").read_text())
    am = Alertmanager(tmp_path, webhook.url, group_by=tuple(config["route"]["group_by"])).start()
    metrics = PagerMetrics(targets=["alertmanager"])
    sender = HttpSender(metrics, RetryPolicy(timeout_s=5, backoff_base_s=0.2))
    pager = Pager([AlertmanagerTarget(am.url, sender)], metrics)
    members = [f"wrong-entity-action/{i}" for i in range(3)]

    # Detected now: Alertmanager holds a new group for group_wait only when its first alert is
    # younger than that (an older one is notified at once, as a late page should be).
    now = format_ts(time.time())

    async def page_all():
        for i, key in enumerate(members):
            record = incident("trigger").model_copy(update={
                "dedup_key": key, "incident_id": f"m{i}", "group_key": "problem/order-agent/1",
                "related": [m for m in members if m != key], "detected_at": now})
            await pager.handle(record)
        await pager.handle(incident("trigger").model_copy(update={"dedup_key": "cost-spike/alone", "incident_id": "x",
                                                                  "detected_at": now}))

    try:
        asyncio.run(page_all())
        webhook.wait_for(lambda a: a["labels"]["dedup_key"] == "cost-spike/alone", 30, "the incident of its own")
        webhook.wait_for(lambda a: a["labels"]["dedup_key"] == members[-1], 30, "the problem's notification")
        time.sleep(2.5)  # past group_interval: any further notification would be here by now
    finally:
        sender.close()
        am.stop()
    with webhook.lock:
        notes = [n for n in webhook.notifications if n["status"] == "firing"]
    grouped = [sorted(a["labels"]["dedup_key"] for a in n["alerts"]) for n in notes]
    assert sorted(grouped) == sorted([members, ["cost-spike/alone"]]), grouped
    problem = next(n for n in notes if len(n["alerts"]) == 3)
    assert problem["groupLabels"] == {"alertname": "SemwatchIncident", "group_key": "problem/order-agent/1"}
