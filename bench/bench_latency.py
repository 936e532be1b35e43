"""Detection latency: produce -> incident on the incidents topic, under steady live-like load.

    .venv/bin/python bench/bench_latency.py --rate 400 [--injections 60] [--interval 0.5]

One `semwatch worker` on its own runs topic. A background stream of generated events is produced
at ``--rate`` events/s with ``ts`` = wall-clock now (event time advances like live traffic, so the
reorder buffer and the windows behave as in production). Every ``--interval`` seconds one
wrong-entity action is injected: an order-agent run whose subject is user u_1 / order #W1 calling
``refund_order`` on order #W9 (side effect). The run id carries a sequence number and the produce
wall time is kept per run id; a kafka-python consumer (assigned partitions, no group) timestamps
the arrival of each ``wrong_entity_action`` trigger and matches it by ``evidence.run_ids``.

Latency = arrival on the incidents topic - the moment the producer was handed the record (the
producer's own linger is part of it, as it would be for a real producer).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_worker import create_topic, loadavg, proc_cpu, start_workers, worker_env  # noqa: E402

from semwatch.broker import EmbeddedBroker  # noqa: E402
from semwatch.simulator.generate import generate  # noqa: E402
from tests.support import scrape  # noqa: E402


@dataclass
class Latency:
    rate_target: float
    rate_sent: float = 0.0
    injected: int = 0
    latencies: list[float] = field(default_factory=list)
    worker_cpu_share: float = 0.0  # worker CPU seconds per wall second during the run
    lag_max: float = 0.0
    load: str = field(default_factory=loadavg)
    note: str = ""

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]

    @property
    def missing(self) -> int:
        return self.injected - len(self.latencies)


def wrong_entity_event(seq: int, now: float) -> tuple[str, dict]:
    run_id = f"lat-{seq:05d}-{int(now * 1e6)}"
    return run_id, {
        "schema_version": "1", "event_id": f"{run_id}-e1", "run_id": run_id, "ts": now,
        "app": "order-agent", "route": "refunds", "model": "claude-3-5-sonnet", "provider": "aws.bedrock",
        "prompt_version": "v3", "input_tokens": 900, "output_tokens": 40, "latency_s": 1.2,
        "finish_reason": "tool_calls",
        "subject": {"user_id": ["u_1"], "order_id": ["#W1"]},
        "tool_calls": [{"name": "refund_order", "call_id": f"call_{seq}", "side_effect": True,
                        "arguments": {"order_id": "#W9", "user_id": "u_1", "amount": 30}}],
    }


def background_events(seed: int = 11):
    """Generated events, forever, with fresh ids each lap (ts is set at send time)."""
    for lap in itertools.count():
        events, _ = generate(seed + lap, 1767571200.0, 2 * 86400)
        for e in events:
            e = dict(e)
            e["event_id"] = f"{e['event_id']}-{lap}"
            e["run_id"] = f"{e['run_id']}-{lap}"
            yield e


class IncidentWatcher(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, sent: dict[str, float]):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.sent = bootstrap, topic, sent
        self.arrived: dict[str, float] = {}
        self.other = 0
        self.stop_flag = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 fetch_max_wait_ms=20)
        try:
            parts = None
            while parts is None and not self.stop_flag.is_set():
                found = consumer.partitions_for_topic(self.topic)
                if found:
                    parts = [TopicPartition(self.topic, p) for p in sorted(found)]
                else:
                    time.sleep(0.2)
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            self.ready.set()
            while not self.stop_flag.is_set():
                batch = consumer.poll(timeout_ms=50)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        inc = json.loads(r.value)
                        if inc.get("kind") != "wrong_entity_action" or inc.get("event_action") != "trigger":
                            self.other += 1
                            continue
                        for rid in (inc.get("evidence") or {}).get("run_ids", []):
                            if rid in self.sent and rid not in self.arrived:
                                self.arrived[rid] = now
        finally:
            consumer.close()


def measure_latency(broker: EmbeddedBroker, rate: float, injections: int = 60, interval: float = 0.5,
                    partitions: int = 4, warmup_s: float = 8.0, drain_s: float = 10.0,
                    extra_env: Optional[dict] = None) -> Latency:
    from kafka import KafkaProducer

    app_id = f"lat-{uuid.uuid4().hex[:6]}"
    topic = f"{app_id}.runs"
    create_topic(broker.bootstrap, topic, partitions)
    env = worker_env(app_id, topic, extra_env)
    tmp = Path(tempfile.mkdtemp(prefix="semwatch-lat-"))
    (worker,) = start_workers(broker, app_id, env, 1, partitions, tmp)
    sent: dict[str, float] = {}
    watcher = IncidentWatcher(broker.bootstrap, env["SEMWATCH_TOPICS__INCIDENTS"], sent)
    watcher.start()
    watcher.ready.wait(30)
    result = Latency(rate_target=rate)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    bg = background_events()
    try:
        t0 = time.time()
        cpu0 = proc_cpu(worker.proc.pid)
        n_bg = 0
        next_inject = t0 + warmup_s
        end_inject = next_inject + injections * interval
        last_scrape = 0.0
        while True:
            now = time.time()
            if now > end_inject + drain_s or (now > end_inject and len(watcher.arrived) >= len(sent)):
                break
            due = int((now - t0) * rate)
            while n_bg < due:
                e = next(bg)
                e["ts"] = time.time()
                producer.send(topic, key=e["run_id"].encode(), value=json.dumps(e).encode())
                n_bg += 1
            if now >= next_inject and result.injected < injections:
                run_id, e = wrong_entity_event(result.injected, time.time())
                value = json.dumps(e).encode()
                sent[run_id] = time.time()
                producer.send(topic, key=run_id.encode(), value=value)
                result.injected += 1
                next_inject += interval
            if now - last_scrape > 1.0:
                last_scrape = now
                m = scrape(worker.metrics_port)
                result.lag_max = max(result.lag_max, m.get("semwatch_consumer_lag_records", 0))
                if not worker.alive():
                    raise RuntimeError(worker.log_tail())
            time.sleep(0.002)
        elapsed = time.time() - t0
        result.rate_sent = n_bg / elapsed
        result.worker_cpu_share = (proc_cpu(worker.proc.pid) - cpu0) / elapsed
        result.latencies = [watcher.arrived[r] - sent[r] for r in sent if r in watcher.arrived]
        result.load = loadavg()
        if watcher.other:
            result.note = f"{watcher.other} other incident records"
    finally:
        watcher.stop_flag.set()
        producer.close()
        worker.stop()
        watcher.join(5)
    return result


def print_latency(r: Latency, label: str = "") -> None:
    print(f"  latency{label}: background {r.rate_sent:,.0f}/s (target {r.rate_target:,.0f}), "
          f"{len(r.latencies)}/{r.injected} incidents, p50 {r.pct(0.5) * 1000:.0f} ms, "
          f"p99 {r.pct(0.99) * 1000:.0f} ms, max {max(r.latencies or [float('nan')]) * 1000:.0f} ms, "
          f"worker CPU {r.worker_cpu_share:.0%}, max lag {r.lag_max:.0f}, load {r.load} {r.note}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=400.0, help="background events/s")
    ap.add_argument("--injections", type=int, default=60)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker (repeatable)")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.env)
    with EmbeddedBroker() as broker:
        r = measure_latency(broker, args.rate, args.injections, args.interval, args.partitions,
                            extra_env=extra)
    print_latency(r)


if __name__ == "__main__":
    main()
