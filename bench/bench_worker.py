"""Worker throughput on generated traffic, side by side with the Faust and Kafka limits.

    .venv/bin/python bench/bench_worker.py [--events 60000] [--partitions 4] [--skip-baselines]
                                           [--skip-scaling] [--sweep] [--sweep-events 20000]

One embedded broker, one pre-produced topic of generated events (default config, every detector
on). Prints a table of events/s for:

  raw aiokafka   consume + json.loads, no Faust            (the Kafka/Python ceiling)
  faust no-op    a Faust agent that only counts            (the Faust ceiling)
  semwatch x1    one `semwatch worker` process             (validate -> keyed topic -> detect)
  semwatch x2    two worker processes, same group          (scaling; started together)
  sweep          semwatch x1 with one setting changed through its SEMWATCH_* environment variable

Rates are *steady*: events between 5 % and 95 % of the run over the time between (start-up, the
first fetch and the reorder buffer's idle release of the last events are excluded). Every row also
gives events per CPU-second of the measured process(es): on a shared machine that number moves much
less with the colleagues' load than the wall-clock rate does. `bench/run_all.py` runs this together
with the latency and memory benchmarks and prints the verdict table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
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

from semwatch.broker import EmbeddedBroker  # noqa: E402
from semwatch.simulator.generate import generate  # noqa: E402
from tests.support import WorkerProcess, scrape  # noqa: E402

START = 1767571200.0
LO, HI = 0.05, 0.95  # the steady part of a run


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Rate:
    name: str
    events: int
    rate: float            # steady events/s (wall clock)
    rate_total: float      # first to last event
    cpu_s: float = 0.0     # CPU seconds of the measured process(es) over the steady part
    load: str = field(default_factory=loadavg)
    note: str = ""

    @property
    def per_cpu(self) -> float:
        return (HI - LO) * self.events / self.cpu_s if self.cpu_s > 0 else float("nan")


def steady(samples: list[tuple[float, float, float]], n: int) -> tuple[float, float, float]:
    """(steady rate, total rate, CPU seconds in the steady part) from (wall, count, cpu) samples."""

    def at(frac: float) -> tuple[float, float]:
        target = frac * n
        prev = samples[0]
        for s in samples:
            if s[1] >= target:
                if s[1] == prev[1]:
                    return s[0], s[2]
                w = (target - prev[1]) / (s[1] - prev[1])
                return prev[0] + w * (s[0] - prev[0]), prev[2] + w * (s[2] - prev[2])
            prev = s
        return samples[-1][0], samples[-1][2]

    (t_lo, c_lo), (t_hi, c_hi) = at(LO), at(HI)
    first = next(s for s in samples if s[1] > 0)
    total = (samples[-1][1] - first[1]) / max(1e-9, samples[-1][0] - first[0])
    return (HI - LO) * n / max(1e-9, t_hi - t_lo), total, c_hi - c_lo


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def proc_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def generated_payloads(n: int, seed: int = 3) -> list[tuple[bytes, bytes]]:
    events, _ = generate(seed, START, 14 * 86400)
    out = []
    for e in events:
        out.append((e["run_id"].encode(), json.dumps(e).encode()))
        if len(out) >= n:
            break
    return out


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce_topic(bootstrap: str, topic: str, n: int, partitions: int, seed: int = 3,
                  payloads: Optional[list[tuple[bytes, bytes]]] = None) -> int:
    from kafka import KafkaProducer

    create_topic(bootstrap, topic, partitions)
    payloads = payloads if payloads is not None else generated_payloads(n, seed)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             max_request_size=32 * 1024 * 1024)
    count = 0
    for key, value in payloads[:n]:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


# -- raw aiokafka ----------------------------------------------------------------------------------
async def _raw_aiokafka(bootstrap: str, topic: str, n: int) -> Rate:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen = 0
    samples = [(time.perf_counter(), 0, time.process_time())]
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batch.values():
                for r in records:
                    json.loads(r.value)
                seen += len(records)
            samples.append((time.perf_counter(), seen, time.process_time()))
    finally:
        await consumer.stop()
    rate, total, cpu = steady(samples, n)
    return Rate("raw aiokafka + json.loads", n, rate, total, cpu)


def raw_aiokafka(bootstrap: str, topic: str, n: int) -> Rate:
    return asyncio.run(_raw_aiokafka(bootstrap, topic, n))


# -- Faust no-op -----------------------------------------------------------------------------------
FAUST_NOOP = r'''
import os, sys, time, faust
bootstrap, topic, n, app_id = os.environ["B_BOOT"], os.environ["B_TOPIC"], int(os.environ["B_N"]), os.environ["B_APP"]
app = faust.App(app_id, broker=f"kafka://{bootstrap}", web_enabled=False, autodiscover=False,
                consumer_auto_offset_reset="earliest", topic_replication_factor=1)
t = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
state = {"seen": 0}
step = max(1, n // 100)
@app.agent(t)
async def noop(stream):
    async for _ in stream:
        state["seen"] += 1
        seen = state["seen"]
        if seen % step == 0 or seen == 1 or seen >= n:
            print(f"SAMPLE {time.perf_counter()} {seen} {time.process_time()}", flush=True)
        if seen >= n:
            os._exit(0)  # measured; no need for a graceful Faust shutdown
app.main()
'''


def faust_noop(bootstrap: str, topic: str, n: int) -> Rate:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(FAUST_NOOP)
    tmp = tempfile.mkdtemp(prefix="semwatch-bench-noop-")
    env = dict(os.environ, B_BOOT=bootstrap, B_TOPIC=topic, B_N=str(n), B_APP=f"noop-{uuid.uuid4().hex[:6]}",
               APP_DATADIR=os.path.join(tmp, "data"))
    proc = subprocess.run([sys.executable, fh.name, "worker", "-l", "warn", "--without-web"], env=env,
                          capture_output=True, text=True, timeout=900, cwd=tmp)
    os.unlink(fh.name)
    samples = []
    for line in (proc.stdout + proc.stderr).splitlines():  # Faust's worker logs stdout
        if "SAMPLE " in line:  # Faust logs what the agent prints
            t, seen, cpu = line.split("SAMPLE ", 1)[1].split()[:3]
            samples.append((float(t), int(seen), float(cpu)))
    if not samples or samples[-1][1] < n:
        raise RuntimeError(f"faust no-op did not finish: {proc.stderr[-2000:]}")
    samples.insert(0, (samples[0][0], 0, samples[0][2]))
    rate, total, cpu = steady(samples, n)
    return Rate("faust no-op agent", n, rate, total, cpu)


# -- semwatch workers ------------------------------------------------------------------------------
def worker_env(app_id: str, topic: str, extra_env: Optional[dict] = None) -> dict:
    env = {"SEMWATCH_TOPICS__RUNS": topic, "SEMWATCH_LOG_LEVEL": "WARNING",
           "SEMWATCH_TOPICS__INCIDENTS": f"{app_id}.incidents", "SEMWATCH_TOPICS__DLQ": f"{app_id}.dlq"}
    env.update(extra_env or {})
    return env


def start_workers(broker: EmbeddedBroker, app_id: str, env: dict, workers: int, partitions: int,
                  tmp: Path) -> list[WorkerProcess]:
    """Start the workers at the same time, so that they join the group in one rebalance."""
    # Faust's data directory defaults to ./<app id>-data in the working directory (the repository).
    procs = [WorkerProcess(broker.url, tmp / f"{app_id}-w{i}.log", app_id=app_id, partitions=partitions,
                           extra_env={"APP_DATADIR": str(tmp / f"{app_id}-w{i}-data"), **env})
             for i in range(workers)]
    errors: list[BaseException] = []

    def start(p: WorkerProcess) -> None:
        try:
            p.start(timeout=180)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for p in procs:
            p.stop()
        raise RuntimeError(f"worker start failed: {errors[0]}")
    return procs


def semwatch_workers(broker: EmbeddedBroker, topic: str, n: int, workers: int, partitions: int,
                     extra_env: Optional[dict] = None, name: Optional[str] = None,
                     timeout: float = 600.0) -> Rate:
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="semwatch-bench-"))
    procs = start_workers(broker, app_id, worker_env(app_id, topic, extra_env), workers, partitions, tmp)
    try:
        samples: list[tuple[float, float, float]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = sum(scrape(p.metrics_port).get("semwatch_events_processed_total", 0) for p in procs)
            samples.append((time.perf_counter(), done, sum(proc_cpu(p.proc.pid) for p in procs)))
            if done >= n:
                break
            for p in procs:
                if not p.alive():
                    raise RuntimeError(p.log_tail())
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{workers} worker(s) processed {samples[-1][1]:.0f} of {n} in {timeout}s")
        per_worker = [scrape(p.metrics_port).get("semwatch_events_processed_total", 0) for p in procs]
        rate, total, cpu = steady(samples, n)
        note = "per worker " + "/".join(f"{x:.0f}" for x in per_worker) if workers > 1 else ""
        return Rate(name or f"semwatch worker x{workers}", n, rate, total, cpu, note=note)
    finally:
        for p in procs:
            p.stop()


# -- settings sweep --------------------------------------------------------------------------------
SWEEP: list[tuple[str, dict]] = [
    ("default settings", {}),
    ("batch_max=10000", {"SEMWATCH_BATCH_MAX": "10000"}),
    ("batch_max=500", {"SEMWATCH_BATCH_MAX": "500"}),
    ("batch_within_s=1.0", {"SEMWATCH_BATCH_WITHIN_S": "1.0"}),
    ("batch_within_s=0.2", {"SEMWATCH_BATCH_WITHIN_S": "0.2"}),
    ("fetch_max_wait_s=1.5 (Faust's)", {"SEMWATCH_FETCH_MAX_WAIT_S": "1.5"}),
    ("producer_linger_s=0.1", {"SEMWATCH_PRODUCER_LINGER_S": "0.1"}),
    ("producer_batch_bytes=4MiB", {"SEMWATCH_PRODUCER_BATCH_BYTES": str(4 << 20)}),
    ("fetch_partition_bytes=2MiB", {"SEMWATCH_FETCH_PARTITION_BYTES": str(2 << 20)}),
    ("combined (10000, 1.0 s, 2 MiB)", {"SEMWATCH_BATCH_MAX": "10000", "SEMWATCH_BATCH_WITHIN_S": "1.0",
                                        "SEMWATCH_FETCH_PARTITION_BYTES": str(2 << 20)}),
]


def sweep(broker: EmbeddedBroker, topic: str, n: int, partitions: int,
          only: Optional[list[str]] = None) -> list[Rate]:
    rows = []
    for name, env in SWEEP:
        if only and name not in only:
            continue
        rows.append(semwatch_workers(broker, topic, n, 1, partitions, env, name=f"sweep: {name}"))
        print_row(rows[-1])
    return rows


# -- output ----------------------------------------------------------------------------------------
def print_row(r: Rate, ref: Optional[float] = None) -> None:
    ratio = f"{r.rate / ref:.2f}x" if ref else "-"
    print(f"  {r.name:<40} {r.rate:>9,.0f}/s {r.per_cpu:>9,.0f}/cpu-s {ratio:>7}  load {r.load}  {r.note}",
          flush=True)


def print_table(rows: list[Rate], ref_name: str = "faust no-op agent") -> None:
    ref = next((r for r in rows if r.name == ref_name), None)
    print(f"\n{'pipeline':<40} {'events/s':>10} {'total/s':>9} {'ev/cpu-s':>9} {'vs no-op':>9} "
          f"{'cpu/cpu':>8}  load avg 1/5/15 m")
    for r in rows:
        ratio = f"{r.rate / ref.rate:.2f}x" if ref else "-"
        cpu_ratio = f"{r.per_cpu / ref.per_cpu:.2f}x" if ref else "-"
        print(f"{r.name:<40} {r.rate:>10,.0f} {r.rate_total:>9,.0f} {r.per_cpu:>9,.0f} {ratio:>9} "
              f"{cpu_ratio:>8}  {r.load}  {r.note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also sweep the batching settings")
    ap.add_argument("--sweep-events", type=int, default=20_000)
    args = ap.parse_args()
    rows: list[Rate] = []
    with EmbeddedBroker() as broker:
        topic = "bench.runs"
        n = produce_topic(broker.bootstrap, topic, args.events, args.partitions)
        print(f"produced {n} generated events to {topic} ({args.partitions} partitions)", flush=True)
        if not args.skip_baselines:
            rows.append(raw_aiokafka(broker.bootstrap, topic, n))
            print_row(rows[-1])
            rows.append(faust_noop(broker.bootstrap, topic, n))
            print_row(rows[-1])
        rows.append(semwatch_workers(broker, topic, n, 1, args.partitions))
        print_row(rows[-1])
        if not args.skip_scaling:
            rows.append(semwatch_workers(broker, topic, n, 2, args.partitions))
            print_row(rows[-1])
        if args.sweep:
            rows += sweep(broker, topic, min(n, args.sweep_events), args.partitions)
    print_table(rows)


if __name__ == "__main__":
    main()
