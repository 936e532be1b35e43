"""The speed table in one run: throughput, settings sweep, scaling, latency, memory.

    .venv/bin/python bench/run_all.py [--events 40000] [--sweep-events 20000] [--quick]

One embedded broker and one set of generated events for every throughput row:

1. events/s: semwatch worker (default detectors) vs a Faust no-op agent vs raw aiokafka +
   json.loads, with ratios (target: semwatch >= 0.8 x the Faust no-op), then a sweep of the batching
   settings through their SEMWATCH_* environment variables (bench_worker.SWEEP).
2. scaling: one vs two worker processes (target >= 1.7 x), on the 4-partition topic and, with
   --scale-partitions, on more partitions. The detect stage is keyed by app, so the share of the
   busiest keyed partition bounds the speed-up; the bound is printed next to the measurement.
3. latency: produce -> incident on the incidents topic for injected wrong-entity actions in a live-like
   background stream at half the measured semwatch x1 rate (target p99 <= 1 s); also with the
   settings of before (Faust's 1.5 s fetch wait, 0.2 s batch wait) to show what they cost.
4. memory: RSS growth per 10k active segments, every detector on, in-process engine and a real worker
   (target <= 50 MB per 10k).

Every number is printed with the 1/5/15-minute load average at the time it was taken: on a shared
2-core machine the wall-clock rates move with the colleagues' load, the events per CPU-second less so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench_latency  # noqa: E402
import bench_memory  # noqa: E402
import bench_worker as bw  # noqa: E402

from semwatch.broker import EmbeddedBroker  # noqa: E402


def detect_balance_bound(payloads: list[tuple[bytes, bytes]], partitions: int, workers: int = 2) -> float:
    """Best speed-up of `workers` workers when the detect stage dominates.

    Records are keyed by app into the keyed topic (aiokafka's murmur2 partitioner); with the keyed
    partitions spread as evenly as the busiest one allows, the busiest worker does at least
    max(share of busiest partition, 1 / workers) of the work.
    """
    from aiokafka.partitioner import DefaultPartitioner

    part = DefaultPartitioner()
    load: Counter = Counter()
    for _, value in payloads:
        app = json.loads(value)["app"]
        load[part(app.encode(), list(range(partitions)), list(range(partitions)))] += 1
    # Greedy: the busiest partitions first, each onto the least loaded worker.
    bins = [0] * workers
    for _, n in load.most_common():
        bins[bins.index(min(bins))] += n
    return sum(bins) / max(bins)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000, help="events per throughput run")
    ap.add_argument("--sweep-events", type=int, default=20_000, help="events per sweep run")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--scale-partitions", type=int, default=16,
                    help="also measure x1 vs x2 on this many partitions (0: skip)")
    ap.add_argument("--repeat", type=int, default=2, help="repeat the no-op and semwatch x1 rows")
    ap.add_argument("--injections", type=int, default=60)
    ap.add_argument("--memory-segments", default="0,10000,50000")
    ap.add_argument("--worker-segments", type=int, default=10_000)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small runs, no sweep (a smoke test)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.events, args.sweep_events, args.repeat, args.injections = 10_000, 5_000, 1, 50
        args.skip_sweep, args.scale_partitions = True, 0
        args.memory_segments, args.worker_segments = "0,10000", 2_000
    started = time.monotonic()
    final: list[tuple[str, str, str, str, str]] = []  # metric, value, target, verdict, load
    print(f"semwatch bench: load average {bw.loadavg()} at start", flush=True)

    with EmbeddedBroker() as broker:
        payloads = bw.generated_payloads(args.events)
        topic = "bench.runs"
        n = bw.produce_topic(broker.bootstrap, topic, args.events, args.partitions, payloads=payloads)
        print(f"\n== 1. throughput: {n:,} generated events on {topic} ({args.partitions} partitions)",
              flush=True)
        rows: list[bw.Rate] = []
        raw = bw.raw_aiokafka(broker.bootstrap, topic, n)
        rows.append(raw)
        bw.print_row(raw)
        noops, x1s = [], []
        for _ in range(args.repeat):
            noops.append(bw.faust_noop(broker.bootstrap, topic, n))
            bw.print_row(noops[-1])
            x1s.append(bw.semwatch_workers(broker, topic, n, 1, args.partitions))
            bw.print_row(x1s[-1])
        rows += noops + x1s
        noop_rate = sum(r.rate for r in noops) / len(noops)
        noop_cpu = sum(r.per_cpu for r in noops) / len(noops)
        x1_rate = sum(r.rate for r in x1s) / len(x1s)
        x1_cpu = sum(r.per_cpu for r in x1s) / len(x1s)
        ratio, ratio_cpu = x1_rate / noop_rate, x1_cpu / noop_cpu
        final.append(("raw aiokafka + json.loads, events/s", f"{raw.rate:,.0f} ({raw.per_cpu:,.0f}/cpu-s)",
                      "-", "-", raw.load))
        final.append(("faust no-op agent, events/s", " / ".join(f"{r.rate:,.0f}" for r in noops)
                      + f" ({noop_cpu:,.0f}/cpu-s)", "-", "-", " ; ".join(r.load for r in noops)))
        final.append(("semwatch x1, events/s", " / ".join(f"{r.rate:,.0f}" for r in x1s)
                      + f" ({x1_cpu:,.0f}/cpu-s)", "-", "-", " ; ".join(r.load for r in x1s)))
        final.append(("semwatch x1 / faust no-op", f"{ratio:.2f}x wall, {ratio_cpu:.2f}x per cpu-s",
                      ">= 0.8x", verdict(ratio >= 0.8), x1s[-1].load))

        if not args.skip_sweep:
            print(f"\n== 1b. settings sweep, semwatch x1, {min(n, args.sweep_events):,} events each", flush=True)
            sweep = bw.sweep(broker, topic, min(n, args.sweep_events), args.partitions)
            rows += sweep
            base = sweep[0]
            for r in sweep[1:]:
                final.append((f"  {r.name.replace('sweep: ', 'sweep ')}",
                              f"{r.rate:,.0f}/s ({r.rate / base.rate - 1:+.0%}), "
                              f"{r.per_cpu:,.0f}/cpu-s ({r.per_cpu / base.per_cpu - 1:+.0%})",
                              "vs default", "-", r.load))
            final.insert(len(final) - len(sweep) + 1,
                         ("  sweep default settings", f"{base.rate:,.0f}/s, {base.per_cpu:,.0f}/cpu-s", "-", "-",
                          base.load))

        print("\n== 2. scaling: one vs two worker processes", flush=True)
        x2 = bw.semwatch_workers(broker, topic, n, 2, args.partitions)
        bw.print_row(x2)
        rows.append(x2)
        bound = detect_balance_bound(payloads, args.partitions)
        final.append((f"scaling x2/x1, {args.partitions} partitions", f"{x2.rate / x1_rate:.2f}x "
                      f"({x2.rate:,.0f}/s; {x2.note}); app-key bound {bound:.2f}x", ">= 1.7x",
                      verdict(x2.rate / x1_rate >= 1.7), x2.load))
        if args.scale_partitions:
            sp = args.scale_partitions
            stopic = f"bench.runs.p{sp}"
            bw.produce_topic(broker.bootstrap, stopic, n, sp, payloads=payloads)
            env = {"SEMWATCH_PARTITIONS": str(sp)}
            s1 = bw.semwatch_workers(broker, stopic, n, 1, sp, env, name=f"semwatch x1, {sp} partitions")
            bw.print_row(s1)
            s2 = bw.semwatch_workers(broker, stopic, n, 2, sp, env, name=f"semwatch x2, {sp} partitions")
            bw.print_row(s2)
            rows += [s1, s2]
            bound = detect_balance_bound(payloads, sp)
            final.append((f"scaling x2/x1, {sp} partitions", f"{s2.rate / s1.rate:.2f}x ({s1.rate:,.0f} -> "
                          f"{s2.rate:,.0f}/s; {s2.note}); app-key bound {bound:.2f}x", ">= 1.7x",
                          verdict(s2.rate / s1.rate >= 1.7), s2.load))
        bw.print_table(rows)

        rate = x1_rate / 2
        print(f"\n== 3. latency: wrong-entity actions in a background stream at {rate:,.0f} events/s "
              f"(half of semwatch x1)", flush=True)
        for label, env in (("default settings", {}),
                           ("as before: fetch wait 1.5 s, batch wait 0.2 s",
                            {"SEMWATCH_FETCH_MAX_WAIT_S": "1.5", "SEMWATCH_BATCH_WITHIN_S": "0.2"})):
            lat = bench_latency.measure_latency(broker, rate, args.injections, 0.5, args.partitions,
                                                extra_env=env)
            bench_latency.print_latency(lat, f" ({label})")
            final.append((f"latency p50 / p99, {label}", f"{lat.pct(0.5) * 1000:,.0f} / {lat.pct(0.99) * 1000:,.0f} ms "
                          f"({len(lat.latencies)}/{lat.injected}, bg {lat.rate_sent:,.0f}/s)", "p99 <= 1000 ms",
                          verdict(lat.pct(0.99) <= 1.0 and lat.missing == 0), lat.load))

        print("\n== 4. memory, every detector on", flush=True)
        for seg in [int(x) for x in args.memory_segments.split(",")]:
            m = bench_memory.engine_memory(seg)
            bench_memory.print_engine(m)
            if seg:
                final.append((f"engine RSS per 10k segments (N={seg:,})",
                              f"{m.per_10k_segments:.0f} MB (+{m.growth_mb:.0f} MB, {m.state_entries:,} entries, "
                              f"{m.per_10k_entries:.0f} MB/10k entries)", "<= 50 MB",
                              verdict(m.per_10k_segments <= 50), m.load))
        if args.worker_segments:
            w = bench_memory.worker_memory(broker, args.worker_segments, args.partitions)
            bench_memory.print_worker(w)
            final.append((f"worker RSS per 10k segments (N={w.segments:,})",
                          f"{w.per_10k_segments:.0f} MB ({w.rss_ready_mb:.0f} -> {w.rss_after_mb:.0f} MB)",
                          "<= 50 MB", verdict(w.per_10k_segments <= 50), w.load))

    width = max(len(f[0]) for f in final)
    vwidth = max(len(f[1]) for f in final)
    print(f"\n== result ({(time.monotonic() - started) / 60:.1f} min)")
    print(f"{'metric':<{width}}  {'value':<{vwidth}}  {'target':<14}  {'verdict':<7}  load avg 1/5/15 m")
    for metric, value, target, ok, load in final:
        print(f"{metric:<{width}}  {value:<{vwidth}}  {target:<14}  {ok:<7}  {load}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [dict(zip(("metric", "value", "target", "verdict", "load"), f)) for f in final], indent=2))


if __name__ == "__main__":
    main()
