"""Producing JSON events to Kafka (``semwatch generate --kafka``), optionally paced in wall-clock time."""

from __future__ import annotations

import json
import sys
import time
from typing import Iterable, Optional

from semwatch.settings import Settings


def make_producer(settings: Settings):
    from kafka import KafkaProducer

    kwargs = settings.kafka_python_kwargs()
    return KafkaProducer(bootstrap_servers=settings.bootstrap_servers().split(","), linger_ms=20,
                         batch_size=256 * 1024, max_request_size=16 * 1024 * 1024, acks=1, **kwargs)


def produce(settings: Settings, topic: str, events: Iterable[dict], rate: Optional[float] = None,
            stop=None) -> int:
    """Send events keyed by run_id; ``rate`` events per wall-clock second (None: as fast as possible)."""
    producer = make_producer(settings)
    sent = 0
    started = time.monotonic()
    try:
        for event in events:
            if stop is not None and stop.is_set():
                break
            producer.send(topic, key=str(event.get("run_id", "")).encode(),
                          value=json.dumps(event, separators=(",", ":")).encode())
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent


def produce_events(args, events: Iterable[dict]) -> int:
    """Entry point used by ``semwatch generate --kafka``."""
    from semwatch.settings import load_settings

    settings = load_settings()
    if not settings.broker_url:
        print("semwatch generate --kafka: set SEMWATCH_BROKER_URL (e.g. kafka://localhost:9092)",
              file=sys.stderr)
        raise SystemExit(2)
    n = produce(settings, settings.topics.runs, events, rate=getattr(args, "rate_limit", None))
    print(f"produced {n} events to {settings.topics.runs}", file=sys.stderr)
    return n
