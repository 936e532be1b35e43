"""The pager agent (``semwatch page``): incident records on ``semwatch.incidents`` -> Alertmanager
(API v2) and/or PagerDuty (Events API v2).

What it guarantees (docs/integrations.md says it for operators):

- every record is delivered to every target at least once, or refused by that target for good
  (a 4xx other than 408/429); a target that is down delays its pages, never drops them;
- targets are independent, and per target records go out in the order they were read, so for one
  dedup key a resolve never overtakes its trigger;
- what each target was given is remembered in a compacted Kafka topic, so duplicates (records read
  again after a crash, a rebalance or lost group offsets) are suppressed across restarts;
- PagerDuty is paged once per problem (incidents sharing a ``group_key``): later incidents update
  the open PagerDuty incident, and it resolves with the last of them.

Modules, in the direction of their imports (each imports only those above it):

- :mod:`~sinks.pager.records`: parsing an incident record with a reason; what targets share
  (severity map, truncation).
- :mod:`~sinks.pager.metrics`: the pager's Prometheus metrics (fixed names, private registry).
- :mod:`~sinks.pager.delivery`: one JSON POST, retried until delivered or refused.
- :mod:`~sinks.pager.alertmanager`, :mod:`~sinks.pager.pagerduty`: an incident as each target's
  payload, and the target that sends it.
- :mod:`~sinks.pager.memory`: what a target was given per dedup key, and the dedup rules.
- :mod:`~sinks.pager.ledger`: that memory on a compacted Kafka topic (or in a list, for tests).
- :mod:`~sinks.pager.offsets`: which offsets may be committed (past what every target is done with).
- :mod:`~sinks.pager.dispatch`: one lane (queue and task) per target; every record to every lane.
- :mod:`~sinks.pager.agent`: the process: Kafka consumer, start-up from the ledger, offset
  commits, re-sending open alerts, the command line (``add_arguments``/``run``).

This package's ``__init__`` imports nothing, so importing one module never loads the others.
"""
