"""``semwatch mark-false-alarm``: an on-call's verdict on an incident, to the feedback topic.

    semwatch mark-false-alarm --dedup-key complaint-cluster/0a1b2c3d4e5f6a7b \\
        [--incident-id I] [--detected-at T] [--reason "seasonal sale traffic"] [--by alice] [--file marks.jsonl]

Writes one :class:`semwatch.contract.feedback.FalseAlarmMark` to ``semwatch.feedback``
(``SEMWATCH_TOPICS__FEEDBACK``; key = the dedup key) on the configured broker
(``SEMWATCH_BROKER_URL`` or ``--broker``), and/or appends it to a JSON Lines file (``--file``).
Workers count the marks per detector (``semwatch_false_alarms_total{detector}``); ``semwatch tune
--feedback marks.jsonl`` counts the marked triggers as false alarms of their detector. The dedup key
and incident id are on every incident record, in the Alertmanager labels and in PagerDuty's
``dedup_key``.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from semwatch.contract import describe_validation_error, format_ts, parse_ts
from semwatch.contract.feedback import FalseAlarmMark


def add_arguments(parser) -> None:
    parser.add_argument("--dedup-key", required=True, help="the incident's dedup_key (<detector>/<digest>)")
    parser.add_argument("--incident-id", default=None, help="the trigger's incident_id (one occurrence)")
    parser.add_argument("--detected-at", default=None,
                        help="the trigger's detected_at (RFC 3339 or epoch s): lets tune find it")
    parser.add_argument("--reason", default=None, help="why it was no incident (free text, kept short)")
    parser.add_argument("--by", default=None, help="who marked it")
    parser.add_argument("--broker", default=None, help="Kafka bootstrap (default: SEMWATCH_BROKER_URL)")
    parser.add_argument("--file", default=None, help="also append the mark to this JSON Lines file")


def build_mark(args, now: float) -> FalseAlarmMark:
    detected = format_ts(parse_ts(args.detected_at)) if args.detected_at else None
    return FalseAlarmMark(dedup_key=args.dedup_key, incident_id=args.incident_id, detected_at=detected,
                          reason=args.reason, marked_by=args.by, marked_at=format_ts(now))


def run(args) -> int:
    from semwatch.settings import load_settings

    try:
        mark = build_mark(args, datetime.now(timezone.utc).timestamp())
    except ValidationError as exc:
        print(f"semwatch mark-false-alarm: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"semwatch mark-false-alarm: --detected-at: {exc}", file=sys.stderr)
        return 2
    overrides = {"broker_url": args.broker} if args.broker else {}
    settings = load_settings(**overrides)
    if not settings.broker_url and not args.file:
        print("semwatch mark-false-alarm: no broker (SEMWATCH_BROKER_URL or --broker) and no --file",
              file=sys.stderr)
        return 2
    record = mark.model_dump_json(exclude_none=True)
    if args.file:
        with Path(args.file).open("a", encoding="utf-8") as fh:
            fh.write(record + "\n")
    if settings.broker_url:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers().split(","), acks="all",
                                 **settings.kafka_python_kwargs())
        try:
            producer.send(settings.topics.feedback, key=mark.dedup_key.encode(), value=record.encode()).get(30)
        finally:
            producer.close()
        print(f"marked {mark.dedup_key} as a false alarm ({mark.detector}) on {settings.topics.feedback}")
    else:
        print(f"marked {mark.dedup_key} as a false alarm ({mark.detector}) in {args.file}")
    return 0

