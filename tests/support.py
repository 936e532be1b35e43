"""Helpers for integration tests: real broker, real worker and pager processes, real Kafka clients, and
a recording HTTP server that stands in for Alertmanager and PagerDuty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Optional

from semwatch.broker import free_port

REPO = Path(__file__).resolve().parent.parent


class ChildProcess:
    """A ``semwatch`` command as a child process in its own session; stderr goes to ``log_path``,
    each line also to :meth:`on_line`."""

    log_path: Path
    env: dict
    proc: Optional[subprocess.Popen] = None

    def _spawn(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "ab") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                self.on_line(line)

    def on_line(self, line: bytes) -> None:
        pass

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, then SIGKILL to the whole session after ``timeout``; the exit code."""
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


class WorkerProcess(ChildProcess):
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
        self.ready = threading.Event()
        self.ready_count = 0

    def start(self, timeout: float = 120.0) -> "WorkerProcess":
        self.ready.clear()
        self._spawn([sys.executable, "-m", "semwatch.cli", "worker"])
        if not self.ready.wait(timeout):
            self.stop()
            raise AssertionError(f"worker not ready within {timeout}s; log:\n{self.log_tail()}")
        return self

    def on_line(self, line: bytes) -> None:
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

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)


def engine_halfway(seed: int = 7, hours: float = 5.0, types: set[str] | None = None):
    """The default config's engine (its detectors of ``types`` only, when given) halfway through
    generated traffic with incidents: ``(config, engine, the events still to come)``, for checks of
    state that is restored there."""
    from semwatch.config import load_config
    from semwatch.contract import RunEvent
    from semwatch.simulator.generate import generate

    config = load_config(REPO / "config")
    if types is not None:
        config = config.with_params([p for p in config.detector_params if p.type in types])
    events, _ = generate(seed=seed, start="2026-01-06T02:00:00Z", duration_s=hours * 3600, rate=2.0)
    events = [RunEvent.model_validate(e) for e in events]
    cut = len(events) // 2
    engine = config.build_engine()
    for event in events[:cut]:
        engine.process(event)
    return config, engine, events[cut:]


class PagerProcess(ChildProcess):
    """``python -m semwatch.cli page`` with its targets and secret in the environment; ``args``
    are further command-line flags (``--group``, ``--backoff-max-s``, ...)."""

    def __init__(self, broker_url: str, log_path: Path, *, alertmanager_url: Optional[str] = None,
                 pagerduty_url: Optional[str] = None, routing_key: Optional[str] = None, args: Iterable[str] = ()):
        self.metrics_port = free_port()
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEMWATCH_")}
        targets = {"SEMWATCH_ALERTMANAGER_URL": alertmanager_url, "SEMWATCH_PAGERDUTY_URL": pagerduty_url,
                   "SEMWATCH_PAGERDUTY_ROUTING_KEY": routing_key}
        self.env.update({k: v for k, v in targets.items() if v})
        self.env.update({"SEMWATCH_BROKER_URL": broker_url, "SEMWATCH_SESSION_TIMEOUT_S": "10",
                         "SEMWATCH_LOG_LEVEL": "INFO"})
        self.args = list(args)
        self.cmd = [sys.executable, "-m", "semwatch.cli", "page", "--metrics-port", str(self.metrics_port),
                    *self.args]
        self.started = threading.Event()  # targets configured, metrics served
        self.ready = threading.Event()  # in the consumer group with partitions assigned

    def start(self, timeout: float = 60.0) -> "PagerProcess":
        """Started, not necessarily ready: the workers create the incidents topic with their first
        incident, and the pager waits for it (reading from the earliest offset, it loses nothing)."""
        self.started.clear()
        self.ready.clear()
        self._spawn(self.cmd)
        if not self.started.wait(timeout):
            self.stop()
            raise AssertionError(f"pager not started within {timeout:.0f}s; log:\n{self.log()}")
        return self

    def on_line(self, line: bytes) -> None:
        if b"semwatch: paging " in line:
            self.started.set()
        if b"semwatch: pager ready" in line:
            self.ready.set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else "(no log)"


AM_PATH = "/api/v2/alerts"  # Alertmanager API v2
PD_PATH = "/v2/enqueue"  # PagerDuty Events API v2


class Receiver:
    """Records every POST; answers from a per-path script of (status, body, delay_s), then 2xx.
    ``down_until[path]`` (a time.monotonic() value) answers 503 to that path until then, unrecorded."""

    def __init__(self, port: int = 0):
        self.requests: list[tuple[str, object]] = []
        self.script: dict[str, list[tuple[int, str, float]]] = {}
        self.down_until: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    steps = receiver.script.get(self.path)
                    if time.monotonic() < receiver.down_until.get(self.path, 0.0):
                        status, text, delay = 503, "down", 0.0
                    else:
                        receiver.requests.append((self.path, json.loads(body)))
                        status, text, delay = steps.pop(0) if steps else (
                            (200, "", 0.0) if self.path == AM_PATH else (202, '{"status":"success"}', 0.0))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(text.encode())))
                    self.end_headers()
                    self.wfile.write(text.encode())
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list:
        with self.lock:
            return [b for p, b in self.requests if p == path]

    def sent(self, path: str) -> list[tuple[str, str]]:
        """(event_action, dedup_key) of every page a path took, in order (Alertmanager: per alert)."""
        if path == PD_PATH:
            return [(b["event_action"], b["dedup_key"]) for b in self.bodies(path)]
        return [("resolve" if "endsAt" in a else "trigger", a["labels"]["dedup_key"])
                for body in self.bodies(path) for a in body]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
