"""The pager's Prometheus metrics, in a private registry. Names and labels are fixed:
config/prometheus/semwatch-rules.yml and the Grafana dashboard depend on them."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from sinks.pager.records import ACTIONS

disable_created_metrics()  # the *_created series only add noise to dashboards

# delivered: the target took it. duplicate: it had it already (nothing sent, or an open alert
# refreshed). grouped: a resolve kept back because other incidents of its problem are still open
# (targets that page once per problem). rejected: refused for good (a 4xx other than 408/429, or
# a malformed record).
OUTCOMES = ("delivered", "duplicate", "grouped", "rejected")


class PagerMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None, targets: Iterable[str] = ()):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pages = Counter("semwatch_pages", "Incident records handled per target, by outcome.",
                             ["target", "event_action", "outcome"], registry=r)
        self.attempts = Counter("semwatch_page_attempts", "HTTP requests sent to a target, retries "
                                "and re-sends of open alerts included.", ["target"], registry=r)
        self.delivery = Histogram(
            "semwatch_page_delivery_seconds", "Time from reading an incident record to its outcome "
            "at a target: waiting behind earlier pages and retries included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r)
        self.last_success = Gauge("semwatch_pager_last_success_timestamp_seconds",
                                  "Wall-clock time of the last successful request to a target.",
                                  ["target"], registry=r)
        self.undelivered = Gauge("semwatch_pager_undelivered_pages",
                                 "Incident records read but not yet done at a target (waiting or being "
                                 "retried).", ["target"], registry=r)
        self.oldest_undelivered = Gauge("semwatch_pager_oldest_undelivered_age_seconds",
                                        "How long the oldest record not yet done at a target has waited "
                                        "(0 when there is none).", ["target"], registry=r)
        for target in targets:  # export zeros, so rate() and increase() work from the start
            self.attempts.labels(target)
            for action in ACTIONS:
                for outcome in OUTCOMES:
                    self.pages.labels(target, action, outcome)

    def watch_backlog(self, target: str, count: Callable[[], float], age: Callable[[], float]) -> None:
        """Read a target's backlog when scraped (always current, nothing to keep up to date)."""
        self.undelivered.labels(target).set_function(count)
        self.oldest_undelivered.labels(target).set_function(age)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics; port 0 picks a free one. Returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port
