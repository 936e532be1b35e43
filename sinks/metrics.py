"""Prometheus metrics of a worker. Names and labels are fixed (docs/architecture.md conventions; the alert
rules in config/prometheus/ and the Grafana dashboard depend on them).

Only bounded labels: detector, kind, severity, reason, event_action. Never run, user or entity ids.

Response KPIs: ``semwatch_detection_delay_seconds{kind,severity}`` (trigger ``detected_at -
window_start``), ``semwatch_incident_open_seconds{kind,severity}`` (resolve - trigger, for triggers
this worker process emitted: a resolve after a restart or rebalance has no start here and is not
observed), ``semwatch_false_alarms_total{detector}`` (on-call marks read from the feedback topic;
a detector name that is not configured counts as ``other``).
"""

from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from semwatch.contract import Incident, parse_ts
from sinks.base import IncidentSink

disable_created_metrics()  # the *_created series only add noise to dashboards

DEAD_LETTER_REASONS = ("undecodable", "invalid_json", "schema", "oversized", "clock")
# Response KPIs, in seconds of event time: from the first anomalous evidence to the trigger
# (detection delay) and from the trigger to the resolve (time open).
DETECTION_DELAY_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
OPEN_TIME_BUCKETS = (60, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
#: Label value for a false-alarm mark naming no configured detector (the label stays bounded).
OTHER = "other"


class WorkerMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("semwatch_events_received", "Records read from the runs topic.", registry=r)
        self.valid = Counter("semwatch_events_valid", "Records that passed validation.", registry=r)
        self.dead_lettered = Counter(
            "semwatch_events_dead_lettered", "Records sent to the dead-letter topic, by reason.",
            ["reason"], registry=r)
        self.processed = Counter("semwatch_events_processed",
                                 "Events run through the detectors.", registry=r)
        self.buffered = Gauge("semwatch_events_buffered",
                              "Events held to be processed in event-time order across partitions.",
                              registry=r)
        self.late = Counter("semwatch_events_late",
                            "Events later than the allowed lateness (kept out of windows).", registry=r)
        self.incidents = Counter(
            "semwatch_incidents", "Incident records emitted.",
            ["kind", "severity", "detector", "event_action"], registry=r)
        self.incidents_open = Gauge(
            "semwatch_incidents_open", "Incidents triggered and not yet resolved.",
            ["kind", "severity", "detector"], registry=r)
        self.problems = Counter(
            "semwatch_problems", "Problems opened: incidents grouped by group_key (one page each).",
            ["severity"], registry=r)
        self.problems_open = Gauge(
            "semwatch_problems_open", "Problems with at least one open incident.", registry=r)
        self.duplicates = Counter(
            "semwatch_events_duplicate", "Events seen before (same app and event_id): ignored, "
            "so a redelivery changes no state.", registry=r)
        self.segments_evicted = Counter(
            "semwatch_segments_evicted", "Segment states forgotten to make room under a detector's cap.",
            ["detector"], registry=r)
        self.segments_refused = Counter(
            "semwatch_segments_refused", "New segments refused (an app over its share, or no room "
            "that an app on probation may take).", ["detector"], registry=r)
        self.incidents_suppressed = Counter(
            "semwatch_incidents_suppressed", "Triggers over a detector's page budget (new problems "
            "per hour): counted and summarised, not paged.", ["detector"], registry=r)
        self.consumer_lag = Gauge("semwatch_consumer_lag_records",
                                  "Records behind the high watermark, over assigned partitions.", registry=r)
        self.last_event_ts = Gauge("semwatch_last_event_timestamp_seconds",
                                   "Event time of the last processed event.", registry=r)
        self.last_processed_ts = Gauge("semwatch_last_processed_timestamp_seconds",
                                       "Wall-clock time of the last processed batch.", registry=r)
        self.processing = Histogram(
            "semwatch_processing_seconds", "Time to process one batch of events.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.segments_active = Gauge("semwatch_segments_active", "Segments with state, by detector.",
                                     ["detector"], registry=r)
        self.detector_errors = Counter(
            "semwatch_detector_errors", "Exceptions in a detector (its event or tick was skipped).",
            ["detector"], registry=r)
        self.ready = Gauge("semwatch_worker_ready",
                           "1 once the worker has its partitions and recovered its state.", registry=r)
        self.otlp_events = Counter("semwatch_otlp_events",
                                   "Run events made from OTLP GenAI spans.", registry=r)
        self.otlp_spans_rejected = Counter("semwatch_otlp_spans_rejected",
                                           "OTLP spans that could not become run events.", registry=r)
        self.detection_delay = Histogram(
            "semwatch_detection_delay_seconds",
            "Event time from an incident's first anomalous evidence (window_start) to its trigger.",
            ["kind", "severity"], buckets=DETECTION_DELAY_BUCKETS, registry=r)
        self.open_time = Histogram(
            "semwatch_incident_open_seconds",
            "Event time from an incident's trigger to its resolve (triggers this worker emitted).",
            ["kind", "severity"], buckets=OPEN_TIME_BUCKETS, registry=r)
        self.false_alarms = Counter(
            "semwatch_false_alarms", "Incidents an on-call marked as false alarms (semwatch.feedback topic).",
            ["detector"], registry=r)
        self.feedback_invalid = Counter(
            "semwatch_feedback_invalid", "Records on the feedback topic that were not valid marks.", registry=r)
        self.state_records_refused = Counter(
            "semwatch_state_records_refused",
            "State changelog records the state codec refused (forged or damaged); their keys start "
            "with no state.", registry=r)
        for reason in DEAD_LETTER_REASONS:  # export zeros, so rate() works from the start
            self.dead_lettered.labels(reason=reason)
        for severity in ("SEV-1", "SEV-2", "SEV-3"):
            self.problems.labels(severity)
        self._open: dict[str, tuple[str, str, str, float]] = {}  # dedup_key -> labels, trigger time
        self._open_gauge: dict[tuple, int] = {}
        self._problem_members: dict[str, set[str]] = {}  # group_key -> its open dedup_keys

    def incident(self, inc: Incident) -> None:
        self.incidents.labels(inc.kind, inc.severity, inc.detector, inc.event_action).inc()
        if inc.group_key:
            members = self._problem_members.get(inc.group_key)
            if inc.event_action == "trigger":
                if members is None:
                    members = self._problem_members[inc.group_key] = set()
                    self.problems.labels(inc.severity).inc()
                    self.problems_open.inc()
                members.add(inc.dedup_key)
            elif members is not None:
                members.discard(inc.dedup_key)
                if not members:
                    del self._problem_members[inc.group_key]
                    self.problems_open.dec()
        labels = (inc.kind, inc.severity, inc.detector)
        if inc.event_action == "trigger":
            detected = parse_ts(inc.detected_at)
            self.detection_delay.labels(inc.kind, inc.severity).observe(
                max(0.0, detected - parse_ts(inc.window_start)))
            if inc.dedup_key not in self._open:
                self._open[inc.dedup_key] = (*labels, detected)
        else:
            opened = self._open.pop(inc.dedup_key, None)
            if opened is not None:
                kind, severity, detector, detected = opened
                # Labelled like its trigger (a resolve may carry another severity).
                self.open_time.labels(kind, severity).observe(max(0.0, parse_ts(inc.detected_at) - detected))

    def set_open_incidents(self, open_incidents) -> None:
        """The open-incident gauge from (kind, severity, detector) of every open incident; label
        sets that are gone drop to 0."""
        counts: dict[tuple, int] = {}
        for labels in open_incidents:
            counts[labels] = counts.get(labels, 0) + 1
        for labels in set(self._open_gauge) - set(counts):
            self.incidents_open.labels(*labels).set(0)
        for labels, n in counts.items():
            self.incidents_open.labels(*labels).set(n)
        self._open_gauge = counts

    def engine_counts(self, before: dict, after: dict) -> None:
        """Add what an engine counted while processing a batch (``before``/``after`` snapshots)."""
        self.late.inc(after["late"] - before["late"])
        self.duplicates.inc(after["duplicates"] - before["duplicates"])
        for field, metric in (("detector_errors", self.detector_errors), ("evicted", self.segments_evicted),
                              ("refused", self.segments_refused), ("suppressed", self.incidents_suppressed)):
            for name, n in after[field].items():
                grown = n - before[field].get(name, 0)
                if grown:
                    metric.labels(detector=name).inc(grown)

    def false_alarm(self, detector: str) -> None:
        """One on-call mark; the label is the detector when it is configured, else ``other``."""
        self.false_alarms.labels(detector if detector in self.detectors else OTHER).inc()

    def declare_detectors(self, names) -> None:
        """The configured detector and rule names: exported with zero false alarms, so that the
        false-alarm rate is 0 (not absent) for a detector nobody has marked."""
        self.detectors = frozenset(names)
        for name in self.detectors:
            self.false_alarms.labels(name)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics; port 0 picks a free one. Returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port


class MetricsSink(IncidentSink):
    """Counts incidents, keeps the open-incident gauge and the response-time histograms
    (``semwatch_incidents_total``, ``semwatch_incidents_open``, ``semwatch_detection_delay_seconds``,
    ``semwatch_incident_open_seconds``)."""

    def __init__(self, metrics: WorkerMetrics):
        self.metrics = metrics

    def add(self, incident: Incident) -> None:
        self.metrics.incident(incident)
