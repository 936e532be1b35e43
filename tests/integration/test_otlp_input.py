"""OpenTelemetry input through a real worker: OTLP/JSON exports (as the Collector's kafka exporter
writes them) on the OTLP topic become run events, are validated and detected like any other; a
payload that is not OTLP is dead-lettered with a reason."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from semwatch.broker import EmbeddedBroker
from semwatch.ingest import otlp as otel
from tests.support import REPO, WorkerProcess, consume, produce

pytestmark = pytest.mark.integration


def test_otlp_exports_become_processed_events(tmp_path):
    raw = (REPO / "tests" / "data" / "otlp_genai_export.json").read_bytes()
    expected, rejected = otel.spans_to_events(otel.decode_export(raw))
    with EmbeddedBroker() as broker:
        worker = WorkerProcess(broker.url, tmp_path / "worker.log", partitions=2,
                               app_id=f"semwatch-otlp-{uuid.uuid4().hex[:6]}",
                               extra_env={"SEMWATCH_OTLP_ENABLED": "true"})
        worker.start()
        try:
            produce(broker.bootstrap, "semwatch.otlp.spans", [(None, raw), (b"junk", b"{\"not\": \"otlp\"}")])
            deadline = time.monotonic() + 60
            while worker.metrics().get("semwatch_events_processed_total", 0) < len(expected):
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.5)
            m = worker.metrics()
            assert m["semwatch_otlp_events_total"] == len(expected)
            assert m["semwatch_otlp_spans_rejected_total"] == len(rejected)
            assert m["semwatch_events_valid_total"] == len(expected)
            runs = consume(broker.bootstrap, "semwatch.runs", until=lambda r: len(r) >= len(expected))
            assert sorted(json.loads(r.value)["event_id"] for r in runs) == sorted(e["event_id"] for e in expected)
            dlq = consume(broker.bootstrap, "semwatch.runs.dlq", until=lambda r: len(r) >= 1)
            assert [r.key for r in dlq] == [b"junk"]
            assert dict(dlq[0].headers)["semwatch.reason"] in (b"invalid_json", b"schema")
            assert dlq[0].value == b"{\"not\": \"otlp\"}"
        finally:
            worker.stop()
