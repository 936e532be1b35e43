"""The pager's Prometheus metrics, in a private registry. Names and labels are fixed:
config/prometheus/semwatch-rules.yml and the Grafana dashboard depend on them."""

from __future__ import annotations

from typing import Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from sinks.pager.records import ACTIONS

disable_created_metrics()  # the *_created series only add noise to dashboards

OUTCOMES = ("delivered", "duplicate", "failed", "rejected")


class PagerMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None, targets: Iterable[str] = ()):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pages = Counter("semwatch_pages", "Incident records handled per target, by outcome.",
                             ["target", "event_action", "outcome"], registry=r)
        self.attempts = Counter("semwatch_page_attempts", "HTTP requests sent to a target, retries "
                                "and re-sends of open alerts included.", ["target"], registry=r)
        self.delivery = Histogram(
            "semwatch_page_delivery_seconds", "Time from taking up a page to its final outcome, "
            "retries included.", buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r)
        self.last_success = Gauge("semwatch_pager_last_success_timestamp_seconds",
                                  "Wall-clock time of the last successful request to a target.",
                                  ["target"], registry=r)
        for target in targets:  # export zeros, so rate() and increase() work from the start
            self.attempts.labels(target)
            for action in ACTIONS:
                for outcome in OUTCOMES:
                    self.pages.labels(target, action, outcome)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics; port 0 picks a free one. Returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port
