"""End to end, every part real: events -> embedded broker -> ``semwatch worker`` (wrong-entity detector)
-> ``semwatch.incidents`` -> ``semwatch page`` (a separate process) -> the real Alertmanager -> a webhook,
and a PagerDuty stand-in; the real Prometheus scrapes the worker and the pager with the repository's
alert rules (config/prometheus/semwatch-rules.yml) and sends its alerts to the same Alertmanager.

The scenario: an order-agent run whose subject is user u_1 / order #W1 refunds order #W9 (a
money-moving call on an entity outside its subject -> a SEV-1 ``wrong_entity_action`` incident). The
page must reach the webhook with the right labels; then later events (event time moved on by more
than the detector's ``auto_resolve_s``) resolve the incident, and the webhook gets the resolve.

Needs the Debian packages prometheus and prometheus-alertmanager (a missing binary FAILS).
Every process is stopped in fixture teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest
import yaml

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # tests/ has no __init__.py: its helpers are top-level modules
    sys.path.insert(0, str(TESTS))

from support import REPO, PagerProcess, WorkerProcess, consume, event_records, produce, scrape  # noqa: E402
from test_pager_alertmanager import Alertmanager, Webhook  # noqa: E402  (the real-Alertmanager helpers)

from semwatch.broker import EmbeddedBroker, free_port  # noqa: E402

pytestmark = pytest.mark.integration

RULES = REPO / "config" / "prometheus" / "semwatch-rules.yml"
ROUTING_KEY = "e2e-routing-key-0123456789abcdef"
APP, ROUTE = "order-agent", "refunds"


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path is None:
        pytest.fail(f"`{name}` is not installed. Install the Debian package {package} "
                    f"(apt-get update && apt-get install -y {package}); this test must not be skipped.",
                    pytrace=False)
    return path


def _wait(predicate, timeout: float, what: str, diagnostics=lambda: ""):
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(0.25)
    raise AssertionError(f"{what} not seen within {timeout:.0f}s (last error: {last_exc})\n{diagnostics()}")


# -- the PagerDuty stand-in --------------------------------------------------------------------------
class FakePagerDuty:
    def __init__(self):
        self.events: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with fake.lock:
                    fake.events.append({"path": self.path, **body})
                out = json.dumps({"status": "success", "dedup_key": body.get("dedup_key")}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def of(self, dedup_key: str) -> list[dict]:
        with self.lock:
            return [e for e in self.events if e.get("dedup_key") == dedup_key]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# -- real processes ---------------------------------------------------------------------------------
class Prometheus:
    def __init__(self, workdir: Path, *, worker_port: int, pager_port: int, alertmanager_port: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
            "scrape_configs": [
                {"job_name": "semwatch-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
                {"job_name": "semwatch-pager", "static_configs": [{"targets": [f"127.0.0.1:{pager_port}"]}]},
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.cmd = [_binary("prometheus", "prometheus"), f"--config.file={self.config}",
                    f"--storage.tsdb.path={workdir / 'prom-data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60.0) -> "Prometheus":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200

        _wait(ready, timeout, "prometheus ready", self.log)
        return self

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- fixtures: started in dependency order, stopped in reverse ---------------------------------------
@pytest.fixture
def broker(tmp_path):
    b = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    yield b
    b.stop()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def pagerduty():
    pd = FakePagerDuty()
    yield pd
    pd.close()


@pytest.fixture
def alertmanager(tmp_path, webhook):
    _binary("prometheus-alertmanager", "prometheus-alertmanager")
    am = Alertmanager(tmp_path, webhook.url).start()
    yield am
    am.stop()


@pytest.fixture
def worker(broker, tmp_path):
    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=f"semwatch-e2e-{broker.port}", partitions=2)
    w.start(timeout=120)
    yield w
    w.stop()


@pytest.fixture
def pager(broker, worker, alertmanager, pagerduty, tmp_path):
    p = PagerProcess(broker.url, tmp_path / "pager.log", alertmanager_url=alertmanager.url,
                     pagerduty_url=pagerduty.url, routing_key=ROUTING_KEY,
                     args=("--resend-interval-s", "5", "--backoff-base-s", "0.2")).start()
    yield p
    p.stop()


@pytest.fixture
def prometheus(tmp_path, worker, pager, alertmanager):
    prom = Prometheus(tmp_path, worker_port=worker.metrics_port, pager_port=pager.metrics_port,
                      alertmanager_port=alertmanager.port).start()
    yield prom
    prom.stop()


def auto_resolve_s() -> float:
    """The wrong-entity detector's auto_resolve_s from the config the worker runs with."""
    config = yaml.safe_load((REPO / "config" / "semwatch.yaml").read_text())
    (det,) = [d for d in config["detectors"] if d.get("type") == "wrong_entity_action"]
    value = float(det.get("auto_resolve_s", 3600))
    assert value > 0, "the e2e test needs the wrong-entity detector to auto-resolve"
    return value


def events(t0: float, later_s: float) -> tuple[list[dict], list[dict]]:
    base = {"schema_version": "1", "app": APP, "route": ROUTE, "model": "gpt-4o-mini",
            "input_tokens": 800, "output_tokens": 60, "latency_s": 1.1}
    wrong = [{**base, "event_id": "e2e-wrong-1", "run_id": "run-wrong-1", "ts": t0,
              "subject": {"user_id": ["u_1"], "order_id": ["#W1"]},
              "tool_calls": [{"name": "refund_order", "call_id": "call_1",
                              "arguments": {"order_id": "#W9", "amount": 30}}]}]
    # Ordinary traffic of the same app, event time moved on past auto_resolve_s.
    later = [{**base, "event_id": f"e2e-later-{i}", "run_id": f"run-later-{i}", "ts": t0 + later_s + 10 * i,
              "subject": {"user_id": [f"u_{i + 2}"]},
              "tool_calls": [{"name": "get_order", "call_id": f"c{i}", "arguments": {"order_id": f"#W{i + 2}"}}]}
             for i in range(5)]
    return wrong, later


def test_wrong_entity_action_is_paged_and_resolved(broker, worker, pager, alertmanager, webhook, pagerduty,
                                                  prometheus):
    diagnostics = lambda: (f"--- worker\n{worker.log_tail()}\n--- pager\n{pager.log()}\n"  # noqa: E731
                           f"--- alertmanager\n{alertmanager.log()}")
    resolve_after = auto_resolve_s()
    t0 = time.time() - resolve_after - 2 * 3600  # event time in the past: 2 h of it pass below
    wrong, later = events(t0, resolve_after + 3600)

    # 1. The wrong-entity action -> a SEV-1 incident record on the incidents topic.
    produce(broker.bootstrap, "semwatch.runs", event_records(wrong))
    records = consume(broker.bootstrap, "semwatch.incidents", timeout=60,
                      until=lambda rs: any(json.loads(r.value)["kind"] == "wrong_entity_action" for r in rs))
    incidents = [json.loads(r.value) for r in records]
    triggers = [i for i in incidents if i["kind"] == "wrong_entity_action" and i["event_action"] == "trigger"]
    assert len(triggers) == 1, (f"expected one wrong_entity_action trigger on semwatch.incidents, got "
                                f"{incidents}; worker log:\n{worker.log_tail()}")
    trigger = triggers[0]
    assert trigger["severity"] == "SEV-1", trigger
    key = trigger["dedup_key"]
    # PagerDuty pages problems: its dedup_key is the incident's group_key (one page per problem).
    pd_key = trigger["group_key"]
    assert pd_key, trigger

    # 2. The pager agent pages it: Alertmanager notifies the webhook, PagerDuty gets a trigger.
    firing = _wait(lambda: next((a for a in webhook.alerts()
                                 if a["labels"].get("dedup_key") == key and a["status"] == "firing"), None),
                   60, "the firing page at the webhook", diagnostics)
    assert pager.ready.is_set()
    labels = firing["labels"]
    assert labels["alertname"] == "SemwatchIncident"
    assert labels["kind"] == "wrong_entity_action"
    assert labels["severity"] == "critical" and labels["semwatch_severity"] == "SEV-1"
    assert labels["dedup_key"] == key and labels["app"] == APP and labels["route"] == ROUTE
    assert labels["source"] == "semwatch-pager"
    assert "run_id" not in labels
    pd_trigger = _wait(lambda: next((e for e in pagerduty.of(pd_key) if e["event_action"] == "trigger"), None),
                       30, "the PagerDuty trigger", diagnostics)
    assert pd_trigger["path"] == "/v2/enqueue" and pd_trigger["routing_key"] == ROUTING_KEY
    assert pd_trigger["payload"]["severity"] == "critical"
    assert pd_trigger["payload"]["class"] == "wrong_entity_action"
    assert pd_trigger["payload"]["custom_details"]["evidence"]["run_ids"] == ["run-wrong-1"]

    # 3. A restart (SIGTERM, graceful) neither loses the open alert nor pages again: offsets were
    #    committed after delivery, and the new pager rebuilds its memory (the open alert included)
    #    from its ledger topic.
    assert pager.stop() == 0, pager.log()
    pager.start()
    _wait(lambda: re.search(r"ledger semwatch\.pager\.delivered: [1-9][0-9]* dedup key\(s\) known", pager.log()),
          60, "the restarted pager reading its ledger", diagnostics)
    _wait(pager.ready.is_set, 60, "the restarted pager in its group", diagnostics)

    # 4. Event time moves on past auto_resolve_s: the incident resolves, and so does the page.
    produce(broker.bootstrap, "semwatch.runs", event_records(later))
    resolved = _wait(lambda: next((a for a in webhook.alerts()
                                   if a["labels"].get("dedup_key") == key and a["status"] == "resolved"), None),
                     90, "the resolved page at the webhook", diagnostics)
    assert resolved["labels"] == labels
    _wait(lambda: any(e["event_action"] == "resolve" for e in pagerduty.of(pd_key)), 30,
          "the PagerDuty resolve", diagnostics)
    assert [e["event_action"] for e in pagerduty.of(pd_key)] == ["trigger", "resolve"]  # paged once
    assert len([a for a in webhook.alerts() if a["labels"].get("dedup_key") == key
                and a["status"] == "firing"]) == 1, "Alertmanager notified the firing alert once"

    # 5. The pager's own metrics (of the restarted process: it handled the resolve).
    metrics = scrape(pager.metrics_port)

    def sample(name: str, **labels: str) -> float:
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        found = [v for series, v in metrics.items() if series.partition("{")[0] == name
                 and set(series.partition("{")[2].rstrip("}").split(",")) == wanted]
        assert len(found) == 1, (name, labels, metrics)
        return found[0]

    for target in ("alertmanager", "pagerduty"):
        assert sample("semwatch_pages_total", target=target, event_action="resolve", outcome="delivered") == 1
        for action in ("trigger", "resolve"):
            assert sample("semwatch_pages_total", target=target, event_action=action, outcome="rejected") == 0
        assert sample("semwatch_pager_undelivered_pages", target=target) == 0
        assert sample("semwatch_pager_last_success_timestamp_seconds", target=target) > 0

    # 6. Prometheus scraped the worker (and the pager) and loaded the repository's rules.
    series = _wait(lambda: prometheus.query(
        'semwatch_incidents_total{job="semwatch-worker",kind="wrong_entity_action",event_action="trigger"}'),
        30, "semwatch_incidents_total in Prometheus", prometheus.log)
    assert sum(float(s["value"][1]) for s in series) >= 1
    _wait(lambda: prometheus.query(
        'sum(semwatch_pages_total{job="semwatch-pager",event_action="resolve",outcome="delivered"}) >= 2'),
          30, "the pager's semwatch_pages_total in Prometheus", prometheus.log)
    groups = {g["name"]: g for g in prometheus.api("rules")["groups"]}
    assert {"semwatch.recording", "semwatch.incidents", "semwatch.pipeline"} <= set(groups)
    assert all(r["health"] in ("ok", "unknown") for g in groups.values() for r in g["rules"]), groups

    # 7. A graceful stop on SIGTERM.
    assert pager.stop() == 0, pager.log()
