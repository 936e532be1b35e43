"""Resident memory per active segment, every detector on.

    .venv/bin/python bench/bench_memory.py [--segments 0,10000,50000] [--worker-segments 10000]

Engine: a fresh process per N builds ``load_config('config').build_engine()`` and feeds it events
spread over N distinct segments: segment i is its own app/route/model/prompt_version combination and
its own two-step order-agent-like run (a read with a result, then an in-scope refund, with text,
tokens and a subject), so every detector and rule keeps state for it. RSS (VmRSS, after
``gc.collect()``) is read before and after; the growth per 10k segments is the number to watch.
Detectors cap their segments (``max_segments``, default 20000): beyond that they evict the least
recently seen, so growth flattens by design.

Worker: one ``semwatch worker`` is started on an empty topic, its RSS read once it is ready, then
the same kind of stream is produced and its RSS read again after it processed everything.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_worker import create_topic, loadavg, proc_rss_mb, start_workers, worker_env  # noqa: E402

START = 1767571200.0
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "claude-3-5-haiku", "gemini-2.0-flash"]
APPS = 50


def segment_events(n: int, offset: int = 0, spacing_s: float = 0.004) -> Iterator[dict]:
    """Two events for each of n distinct segments (and runs), in event-time order."""
    for i in range(offset, offset + n):
        ts = START + (i - offset) * spacing_s
        app, route = f"app-{i % APPS}", f"route-{i // APPS}"
        run = f"run-mem-{i}"
        base = {"schema_version": "1", "run_id": run, "app": app, "route": route,
                "model": MODELS[i % len(MODELS)], "provider": "openai", "prompt_version": f"v{i % 7}",
                "tenant": f"t{i % 13}", "latency_s": 0.8 + (i % 10) / 10,
                "subject": {"user_id": [f"u_{i}"], "order_id": [f"#W{i}"]}}
        yield {**base, "event_id": f"{run}-1", "ts": ts, "input_tokens": 900 + i % 300, "output_tokens": 40,
               "finish_reason": "tool_calls", "request_text": "Where is my order?",
               "tool_calls": [{"name": "get_order", "call_id": f"c{i}a", "side_effect": False,
                               "arguments": {"order_id": f"#W{i}"},
                               "result": {"order_id": f"#W{i}", "status": "delivered"}}]}
        yield {**base, "event_id": f"{run}-2", "ts": ts + spacing_s / 2, "input_tokens": 1300 + i % 200,
               "output_tokens": 80, "finish_reason": "stop",
               "response_text": "I have refunded your order; the money is back in 3-5 days.",
               "tool_calls": [{"name": "refund_order", "call_id": f"c{i}b", "side_effect": True,
                               "arguments": {"order_id": f"#W{i}", "user_id": f"u_{i}", "amount": 20}}]}


@dataclass
class EngineMemory:
    segments: int
    rss_before_mb: float
    rss_after_mb: float
    state_entries: int
    per_detector: dict = field(default_factory=dict)
    evicted: int = 0
    refused: int = 0
    seconds: float = 0.0
    load: str = field(default_factory=loadavg)

    @property
    def growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb

    @property
    def per_10k_segments(self) -> float:
        return self.growth_mb / (self.segments / 10_000) if self.segments else float("nan")

    @property
    def per_10k_entries(self) -> float:
        return self.growth_mb / (self.state_entries / 10_000) if self.state_entries else float("nan")


def _child(n: int) -> None:
    from semwatch.config import load_config
    from semwatch.contract import RunEvent

    engine = load_config(REPO / "config").build_engine()
    # Warm up (imports, the classifier, price tables) on segments that are then forgotten.
    for e in segment_events(50, offset=10_000_000):
        engine.process(RunEvent.model_validate(e))
    engine.data.clear()
    engine.rebuild_indexes()
    engine.pop_dirty()
    gc.collect()
    before = proc_rss_mb()
    t0 = time.perf_counter()
    for e in segment_events(n):
        engine.process(RunEvent.model_validate(e))
    engine.pop_dirty()
    seconds = time.perf_counter() - t0
    gc.collect()
    after = proc_rss_mb()
    print(json.dumps({"segments": n, "rss_before_mb": before, "rss_after_mb": after,
                      "state_entries": len(engine.data), "per_detector": engine.segments_active(),
                      "evicted": engine.stats.evicted, "refused": engine.stats.refused_segments,
                      "seconds": seconds}))


def engine_memory(n: int) -> EngineMemory:
    out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                         timeout=900, cwd=REPO)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return EngineMemory(**json.loads(out.stdout.strip().splitlines()[-1]))


@dataclass
class WorkerMemory:
    segments: int
    rss_ready_mb: float
    rss_after_mb: float
    segments_active: float
    load: str = field(default_factory=loadavg)

    @property
    def per_10k_segments(self) -> float:
        return (self.rss_after_mb - self.rss_ready_mb) / (self.segments / 10_000)


def worker_memory(broker, n: int, partitions: int = 4, timeout: float = 600.0) -> WorkerMemory:
    from kafka import KafkaProducer

    from tests.support import scrape

    app_id = f"mem-{uuid.uuid4().hex[:6]}"
    topic = f"{app_id}.runs"
    create_topic(broker.bootstrap, topic, partitions)
    tmp = Path(tempfile.mkdtemp(prefix="semwatch-mem-"))
    (worker,) = start_workers(broker, app_id, worker_env(app_id, topic), 1, partitions, tmp)
    try:
        time.sleep(3)
        ready = proc_rss_mb(worker.proc.pid)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=512 * 1024)
        for e in segment_events(n):
            producer.send(topic, key=e["run_id"].encode(), value=json.dumps(e).encode())
        producer.flush()
        producer.close()
        deadline = time.monotonic() + timeout
        while scrape(worker.metrics_port).get("semwatch_events_processed_total", 0) < 2 * n:
            if time.monotonic() > deadline or not worker.alive():
                raise RuntimeError(f"worker did not process the stream:\n{worker.log_tail()}")
            time.sleep(0.5)
        time.sleep(6)  # the segments gauge is updated every 5 s
        m = scrape(worker.metrics_port)
        active = sum(v for k, v in m.items() if k.startswith("semwatch_segments_active"))
        return WorkerMemory(n, ready, proc_rss_mb(worker.proc.pid), active)
    finally:
        worker.stop()


def print_engine(r: EngineMemory) -> None:
    print(f"  engine N={r.segments:>6,}: RSS {r.rss_before_mb:.0f} -> {r.rss_after_mb:.0f} MB "
          f"(+{r.growth_mb:.1f} MB, {r.per_10k_segments:.1f} MB per 10k segments, "
          f"{r.per_10k_entries:.1f} MB per 10k state entries), {r.state_entries:,} state entries, "
          f"evicted {r.evicted:,}, {2 * r.segments / r.seconds if r.seconds else 0:,.0f} events/s, "
          f"load {r.load}", flush=True)


def print_worker(r: WorkerMemory) -> None:
    print(f"  worker N={r.segments:>6,}: RSS {r.rss_ready_mb:.0f} MB ready -> {r.rss_after_mb:.0f} MB "
          f"({r.per_10k_segments:.1f} MB per 10k segments), segments_active sum {r.segments_active:,.0f}, "
          f"load {r.load}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--segments", default="0,10000,50000")
    ap.add_argument("--worker-segments", type=int, default=10_000, help="0 skips the worker")
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child)
        return
    for n in [int(x) for x in args.segments.split(",")]:
        print_engine(engine_memory(n))
    if args.worker_segments:
        from semwatch.broker import EmbeddedBroker

        with EmbeddedBroker() as broker:
            print_worker(worker_memory(broker, args.worker_segments))


if __name__ == "__main__":
    main()
