"""Checks for the Prometheus rules, Alertmanager example and Grafana dashboard in config/.

Runs the real tools: `promtool check rules`, `promtool test rules` (unit tests in
tests/prometheus/semwatch-rules.test.yml), `promtool check config` and `amtool check-config`.
They come with the Debian packages `prometheus` and `prometheus-alertmanager`; CI installs
them. A missing tool is a test FAILURE, not a skip: a skipped alert-rule check looks green and
lets broken paging through.

The dashboard and the rules are also checked against the metric names the worker and the pager
agent expose (the fixed list below, from the design), so neither can drift from the code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "config" / "prometheus" / "semwatch-rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "semwatch-rules.test.yml"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "config" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "config" / "grafana" / "semwatch-dashboard.json"
GRAFANA_DATASOURCE = ROOT / "config" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS = ROOT / "config" / "grafana" / "provisioning" / "dashboards" / "semwatch.yml"

def _exposed_metrics() -> tuple[dict[str, set[str]], set[str]]:
    """Metric name -> its own labels, read from the worker's and the pager's real registries (every
    series also has `job` and `instance` from scraping), and the histograms among them (exposed as
    <name>_bucket{le}, <name>_sum and <name>_count)."""
    from prometheus_client import CollectorRegistry

    from sinks.metrics import WorkerMetrics
    from sinks.pager.metrics import PagerMetrics

    metrics: dict[str, set[str]] = {}
    histograms: set[str] = set()
    for owner in (WorkerMetrics(CollectorRegistry()), PagerMetrics(CollectorRegistry())):
        for collector in list(owner.registry._collector_to_names):
            kind = getattr(collector, "_type", "")
            name = collector._name + ("_total" if kind == "counter" else "")
            metrics[name] = set(getattr(collector, "_labelnames", ()))
            if kind == "histogram":
                histograms.add(name)
    return metrics, histograms


METRICS, HISTOGRAMS = _exposed_metrics()
SCRAPE_LABELS = {"job", "instance"}
JOBS = {"semwatch-worker", "semwatch-pager"}

# A semwatch metric name, but not the middle part of a recording rule name (level:metric:ops).
METRIC_RE = re.compile(r"(?<![\w:])semwatch_[a-z0-9_]+(?![\w:])")
# Label names in by (...) / without (...) clauses and in {label op "value"} matchers.
GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR_RE = re.compile(r"\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH. Install the Debian packages `prometheus` (promtool) and "
            f"`prometheus-alertmanager` (amtool): "
            f"apt-get update && apt-get install -y prometheus prometheus-alertmanager. "
            f"CI installs them; these checks must not be skipped.",
            pytrace=False,
        )
    return path


def _run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def _base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in HISTOGRAMS:
            return base
    return name


def _check_promql(expr: str, where: str, extra_names: set[str] = frozenset()) -> list[str]:
    """Problems with metric and label names in one PromQL expression."""
    problems = []
    names = set()
    for raw in METRIC_RE.findall(expr):
        base = _base_metric(raw)
        if base not in METRICS:
            problems.append(f"{where}: unknown metric {raw!r} in {expr!r}")
        else:
            names.add(base)
            if raw != base and raw.endswith("_bucket"):
                names.add("le")  # marker: `le` allowed
    allowed = set(SCRAPE_LABELS) | set(extra_names)
    for name in names:
        allowed |= METRICS.get(name, set())
    if "le" in names:
        allowed.add("le")
    used = set()
    for group in GROUPING_RE.findall(expr):
        used |= {label.strip() for label in group.split(",") if label.strip()}
    for selector in SELECTOR_RE.findall(expr):
        used |= set(MATCHER_RE.findall(selector))
    for label in sorted(used - allowed - {"__name__"}):
        problems.append(f"{where}: label {label!r} is not a label of the metrics in {expr!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# Prometheus rules
# ---------------------------------------------------------------------------------------------


def test_promtool_check_rules():
    _run([_tool("promtool"), "check", "rules", str(RULES)])


def test_promtool_test_rules():
    proc = _run([_tool("promtool"), "test", "rules", str(RULE_TESTS)])
    assert "SUCCESS" in proc.stdout, proc.stdout


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_use_only_exposed_metrics_and_labels():
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    problems = []
    for rule in rules:
        name = rule.get("record") or rule.get("alert")
        problems += _check_promql(rule["expr"], name)
        # Recording rule names used in expressions must be defined here.
        for used in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]):
            if used not in recorded:
                problems.append(f"{name}: undefined recording rule {used!r}")
        for job in re.findall(r'job\s*=~?\s*"([^"]+)"', rule["expr"]):
            for alternative in job.split("|"):
                if alternative not in JOBS:
                    problems.append(f"{name}: unknown job {alternative!r}")
    assert not problems, "\n".join(problems)


def test_every_alert_is_well_formed():
    alerts = [r for r in _rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "SemwatchIncidentOpen",
        "SemwatchDeadLetterRateHigh",
        "SemwatchWorkerStalled",
        "SemwatchConsumerLagGrowing",
        "SemwatchNoEventsReceived",
        "SemwatchWorkerDown",
        "SemwatchPagerDeliveryFailing",
        "SemwatchPageUndelivered",
        "SemwatchLateEvents",
    }
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("for"), f"{name}: needs `for:` against blips"
        assert alert.get("keep_firing_for"), f"{name}: needs `keep_firing_for:` against flapping"
        assert alert.get("labels", {}).get("severity"), f"{name}: needs a severity label"
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{name}: needs annotation {key}"
    incident = next(a for a in alerts if a["alert"] == "SemwatchIncidentOpen")
    assert incident["labels"]["source"] == "prometheus"
    assert "safety net" in incident["annotations"]["description"]


def test_every_alert_has_firing_and_quiet_unit_tests():
    """Each alert needs at least one case that must fire and one that must not."""
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert not alerts - fires, f"alerts without a firing test case: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"alerts without a must-not-fire test case: {sorted(alerts - quiet)}"


def test_promtool_check_prometheus_config(tmp_path):
    """prometheus.yml is valid, with the rules file where docker-compose mounts it."""
    config = PROMETHEUS_CONFIG.read_text()
    mounted = "/etc/prometheus/semwatch-rules.yml"
    assert mounted in config
    shutil.copy(RULES, tmp_path / "semwatch-rules.yml")
    (tmp_path / "prometheus.yml").write_text(config.replace(mounted, "semwatch-rules.yml"))
    _run([_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")], cwd=tmp_path)

    doc = yaml.safe_load(config)
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    targets = {
        name: sorted(t for sc in job.get("static_configs", []) for t in sc["targets"])
        for name, job in jobs.items()
    }
    assert targets["semwatch-worker"] == ["worker-1:9464", "worker-2:9464"]
    assert targets["semwatch-pager"] == ["pager:9465"]
    am_targets = [t for am in doc["alerting"]["alertmanagers"] for sc in am["static_configs"]
                  for t in sc["targets"]]
    assert am_targets == ["alertmanager:9093"]


# ---------------------------------------------------------------------------------------------
# Alertmanager example
# ---------------------------------------------------------------------------------------------


def test_amtool_check_config():
    _run([_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])


@pytest.mark.parametrize(
    "labels, receiver",
    [
        (["alertname=SemwatchIncidentOpen", "severity=critical", "source=prometheus"], "pagerduty-oncall"),
        (["alertname=SemwatchWorkerStalled", "severity=critical"], "pagerduty-oncall"),
        (["alertname=SemwatchIncidentOpen", "severity=error"], "semwatch-webhook"),
        (["alertname=SemwatchLateEvents", "severity=warning"], "semwatch-webhook"),
    ],
)
def test_alertmanager_routes(labels, receiver):
    _run([
        _tool("amtool"), "config", "routes", "test",
        f"--config.file={ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}", *labels,
    ])


def test_alertmanager_groups_by_problem():
    """One notification per problem: the pager's alerts share a group_key per problem."""
    doc = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert doc["route"]["group_by"] == ["alertname", "group_key"]
    incident_open = next(r for r in _rules() if r.get("alert") == "SemwatchIncidentOpen")
    assert incident_open["labels"]["group_key"] == incident_open["labels"]["dedup_key"]


# ---------------------------------------------------------------------------------------------
# Grafana dashboard
# ---------------------------------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboard_queries_use_only_exposed_metrics():
    dashboard = _dashboard()
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    problems = []
    queries = 0
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            where = f"panel {panel.get('id')} {panel.get('title')!r} ref {target.get('refId')}"
            if not METRIC_RE.search(expr):
                problems.append(f"{where}: no semwatch metric in {expr!r}")
            problems += _check_promql(expr, where)
            queries += 1
    for variable in dashboard.get("templating", {}).get("list", []):
        definition = variable.get("definition", "")
        query = variable.get("query", {})
        query = query.get("query", "") if isinstance(query, dict) else query
        for text in {definition, query} - {""}:
            problems += _check_promql(text, f"variable {variable['name']!r}")
    assert queries >= 10, f"only {queries} queries found"
    assert variables, "expected a worker/instance variable"
    assert not problems, "\n".join(problems)


def test_dashboard_shape():
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] == 39
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = " ".join(
        t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])
    )
    # The panels the design asks for.
    for metric in (
        "semwatch_events_received_total", "semwatch_events_valid_total",
        "semwatch_events_dead_lettered_total", "semwatch_incidents_total",
        "semwatch_incidents_open", "semwatch_consumer_lag_records",
        "semwatch_last_event_timestamp_seconds", "semwatch_processing_seconds_bucket",
        "semwatch_segments_active", "semwatch_pages_total",
        "semwatch_detection_delay_seconds_bucket", "semwatch_incident_open_seconds_bucket",
        "semwatch_false_alarms_total",
    ):
        assert metric in exprs, f"no panel shows {metric}"
    assert "time() - max by (instance) (semwatch_last_event_timestamp_seconds" in exprs
    assert "histogram_quantile(0.99" in exprs
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", panel["title"]


def test_grafana_provisioning():
    datasources = yaml.safe_load(GRAFANA_DATASOURCE.read_text())["datasources"]
    assert [(d["uid"], d["type"]) for d in datasources] == [("prometheus", "prometheus")]
    providers = yaml.safe_load(GRAFANA_DASHBOARDS.read_text())["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_metric_name_check_catches_drift():
    """The checker itself: a renamed metric or a wrong label is reported."""
    assert _check_promql("rate(semwatch_events_received_total[5m])", "ok") == []
    assert _check_promql(
        "histogram_quantile(0.99, sum by (le) (rate(semwatch_processing_seconds_bucket[5m])))", "ok"
    ) == []
    assert _check_promql("job:semwatch_events_received:rate5m", "ok") == []
    assert _check_promql("rate(semwatch_events_recieved_total[5m])", "typo")
    assert _check_promql("sum by (reason) (semwatch_incidents_open)", "label")
    assert _check_promql('semwatch_pages_total{outcom="failed"}', "matcher")
