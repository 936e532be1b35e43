"""Worker throughput on generated traffic, side by side with the Faust and Kafka limits.

    .venv/bin/python bench/bench_worker.py [--events 100000] [--partitions 4] [--skip-baselines]

One embedded broker, one pre-produced topic of generated events (default config, every detector
on). Prints a table of events/s for:

  raw aiokafka   consume + json.loads, no Faust            (the Kafka/Python ceiling)
  faust no-op    a Faust agent that only counts            (the Faust ceiling)
  semwatch x1    one `semwatch worker` process             (validate -> keyed topic -> detect)
  semwatch x2    two worker processes, same group          (scaling)

Timings are from the first to the last event processed (the worker's start-up is excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semwatch.broker import EmbeddedBroker  # noqa: E402
from semwatch.generate import generate  # noqa: E402
from tests.support import WorkerProcess, scrape  # noqa: E402

START = 1767571200.0


def produce_topic(bootstrap: str, topic: str, n: int, partitions: int, seed: int = 3) -> list[bytes]:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    events, _ = generate(seed, START, 7 * 86400)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024)
    count = 0
    for e in events:
        producer.send(topic, key=e["run_id"].encode(), value=json.dumps(e).encode())
        count += 1
        if count >= n:
            break
    producer.flush()
    producer.close()
    return count


async def raw_aiokafka(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen = 0
    t0 = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in records:
                    json.loads(r.value)
                seen += len(records)
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - t0)


FAUST_NOOP = r'''
import os, sys, time, faust
bootstrap, topic, n, app_id = os.environ["B_BOOT"], os.environ["B_TOPIC"], int(os.environ["B_N"]), os.environ["B_APP"]
app = faust.App(app_id, broker=f"kafka://{bootstrap}", web_enabled=False, autodiscover=False,
                consumer_auto_offset_reset="earliest", topic_replication_factor=1)
t = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
state = {"seen": 0, "t0": None}
@app.agent(t)
async def noop(stream):
    async for _ in stream:
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        state["seen"] += 1
        if state["seen"] >= n:
            print(f"RATE {n / (time.perf_counter() - state['t0']):.1f}", flush=True)
            os._exit(0)  # measured; no need for a graceful Faust shutdown
app.main()
'''


def faust_noop(bootstrap: str, topic: str, n: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(FAUST_NOOP)
    env = dict(os.environ, B_BOOT=bootstrap, B_TOPIC=topic, B_N=str(n), B_APP=f"noop-{uuid.uuid4().hex[:6]}")
    proc = subprocess.run([sys.executable, fh.name, "worker", "-l", "warn", "--without-web"], env=env,
                          capture_output=True, text=True, timeout=900)
    os.unlink(fh.name)
    for line in (proc.stdout + proc.stderr).splitlines():  # Faust's worker logs stdout
        if "RATE " in line:
            return float(line.split("RATE ")[1].split()[0])
    raise RuntimeError(f"faust no-op did not finish: {proc.stderr[-2000:]}")


def semwatch_workers(broker: EmbeddedBroker, topic: str, n: int, workers: int, partitions: int,
                     extra_env: dict | None = None) -> float:
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    procs = []
    tmp = Path(tempfile.mkdtemp())
    env = {"SEMWATCH_TOPICS__RUNS": topic, "SEMWATCH_LOG_LEVEL": "WARNING",
           "SEMWATCH_TOPICS__INCIDENTS": f"{app_id}.incidents", "SEMWATCH_TOPICS__DLQ": f"{app_id}.dlq"}
    env.update(extra_env or {})
    try:
        for i in range(workers):
            procs.append(WorkerProcess(broker.url, tmp / f"w{i}.log", app_id=app_id,
                                       partitions=partitions, extra_env=env).start(timeout=180))
        t0 = None
        while True:
            done = sum(scrape(p.metrics_port).get("semwatch_events_processed_total", 0) for p in procs)
            if t0 is None and done > 0:
                t0, first = time.perf_counter(), done
            if done >= n:
                return (n - first) / (time.perf_counter() - t0)
            for p in procs:
                if not p.alive():
                    raise RuntimeError(p.log_tail())
            time.sleep(0.2)
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    args = ap.parse_args()
    rows = []
    with EmbeddedBroker() as broker:
        topic = "bench.runs"
        n = produce_topic(broker.bootstrap, topic, args.events, args.partitions)
        print(f"produced {n} generated events to {topic} ({args.partitions} partitions)", flush=True)
        if not args.skip_baselines:
            rows.append(("raw aiokafka + json.loads", asyncio.run(raw_aiokafka(broker.bootstrap, topic, n))))
            print(rows[-1], flush=True)
            rows.append(("faust no-op agent", faust_noop(broker.bootstrap, topic, n)))
            print(rows[-1], flush=True)
        rows.append(("semwatch worker x1", semwatch_workers(broker, topic, n, 1, args.partitions)))
        print(rows[-1], flush=True)
        if not args.skip_scaling:
            rows.append(("semwatch workers x2", semwatch_workers(broker, topic, n, 2, args.partitions)))
            print(rows[-1], flush=True)
    noop = dict(rows).get("faust no-op agent")
    print(f"\n{'pipeline':<28} {'events/s':>10} {'vs faust no-op':>15}")
    for name, rate in rows:
        ratio = f"{rate / noop:.2f}x" if noop else "-"
        print(f"{name:<28} {rate:>10,.0f} {ratio:>15}")


if __name__ == "__main__":
    main()
