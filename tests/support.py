"""Helpers for integration tests: real broker, real worker processes, real Kafka clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterable, Optional

from semwatch.broker import free_port

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """``semwatch worker`` as a child process; stderr is kept in a log file and scanned."""

    def __init__(self, broker_url: str, log_path: Path, *, app_id: str, config_dir: Optional[Path] = None,
                 partitions: int = 2, extra_env: Optional[dict] = None, metrics_port: Optional[int] = None):
        self.metrics_port = metrics_port or free_port()
        self.log_path = log_path
        self.env = dict(os.environ)
        self.env.update({
            "SEMWATCH_BROKER_URL": broker_url,
            "SEMWATCH_METRICS_PORT": str(self.metrics_port),
            "SEMWATCH_APP_ID": app_id,
            "SEMWATCH_PARTITIONS": str(partitions),
            "SEMWATCH_CONFIG_DIR": str(config_dir or REPO / "config"),
            "SEMWATCH_SESSION_TIMEOUT_S": "10",
            "SEMWATCH_LOG_LEVEL": "INFO",
        })
        self.env.update(extra_env or {})
        self.proc: Optional[subprocess.Popen] = None
        self.ready = threading.Event()
        self.ready_count = 0

    def start(self, timeout: float = 120.0) -> "WorkerProcess":
        self.ready.clear()
        self.proc = subprocess.Popen([sys.executable, "-m", "semwatch.cli", "worker"], env=self.env,
                                     cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self.ready.wait(timeout):
            self.stop()
            raise AssertionError(f"worker not ready within {timeout}s; log:\n{self.log_tail()}")
        return self

    def _pump(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "ab") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                if b"semwatch: worker ready" in line:
                    self.ready_count += 1
                    self.ready.set()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def produce(bootstrap: str, topic: str, records: Iterable[tuple[Optional[bytes], bytes]]) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_request_size=32 * 1024 * 1024)
    n = 0
    for key, value in records:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush()
    producer.close()
    return n


def event_records(events: Iterable[dict]) -> Iterable[tuple[bytes, bytes]]:
    for e in events:
        yield str(e["run_id"]).encode(), json.dumps(e).encode()


def consume(bootstrap: str, topic: str, *, until=None, timeout: float = 60.0,
            idle_s: float = 5.0) -> list:
    """Read a topic from the beginning without a consumer group (group joins are slow on Tansu).

    Stops when ``until(records)`` is true, or after ``idle_s`` without new records once
    ``until`` is None, or at ``timeout``.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=32 * 1024 * 1024)
    records: list = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        parts = None
        while time.monotonic() < deadline:
            if parts is None:
                found = consumer.partitions_for_topic(topic)
                if not found:
                    time.sleep(0.5)
                    continue
                parts = [TopicPartition(topic, p) for p in sorted(found)]
                consumer.assign(parts)
                consumer.seek_to_beginning(*parts)
            batch = consumer.poll(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
                last_new = time.monotonic()
            if until is not None and until(records):
                break
            if until is None and records and time.monotonic() - last_new > idle_s:
                break
    finally:
        consumer.close()
    return records


def replay_one(detector_cls, params: dict, events: list[dict], env=None, tail_s: float = 7200.0) -> list:
    """Event dicts (any order) through an engine holding one detector; event time then moves
    ``tail_s`` past the last event so that open incidents can resolve."""
    from semwatch.contract import RunEvent
    from semwatch.engine.core import Engine, EngineOptions
    from semwatch.engine.detector import DetectorEnv

    p = detector_cls.Params.model_validate({"name": params.get("name", "under-test"),
                                            "type": detector_cls.type_name, **params})
    engine = Engine([detector_cls(p, env or DetectorEnv())], EngineOptions())
    out = []
    for e in sorted(events, key=lambda e: e["ts"]):
        out.extend(engine.process(RunEvent.model_validate(e)))
    out.extend(engine.advance_to(max(e["ts"] for e in events) + tail_s))
    return out
