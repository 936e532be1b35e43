"""The pager agent (``semwatch page``): incident records on ``semwatch.incidents`` -> Alertmanager
(API v2) and/or PagerDuty (Events API v2).

Modules, in the direction of their imports (each imports only those above it):

- :mod:`~sinks.pager.records`: parsing an incident record with a reason; what targets share
  (severity map, truncation).
- :mod:`~sinks.pager.metrics`: the pager's Prometheus metrics (fixed names, private registry).
- :mod:`~sinks.pager.delivery`: one JSON POST with retries and backoff, and its outcome.
- :mod:`~sinks.pager.alertmanager`, :mod:`~sinks.pager.pagerduty`: an incident as each target's
  payload, and the target that sends it.
- :mod:`~sinks.pager.dispatch`: every record to every target, with dedup and outcome metrics.
- :mod:`~sinks.pager.agent`: the process: Kafka consumer, warm start, offset commits, re-sending
  open alerts, the command line (``add_arguments``/``run``).

This package's ``__init__`` imports nothing, so importing one module never loads the others.
"""
