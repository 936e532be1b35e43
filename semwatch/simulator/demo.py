"""``semwatch demo``: embedded broker + a worker process + scripted traffic, incidents shown live.

Everything it starts, it stops: after ``--duration`` seconds, on Ctrl-C and on error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from semwatch.broker import EmbeddedBroker, free_port
from semwatch.contract import is_optional, parse_ts
from semwatch.settings import load_settings

SEV_COLOURS = {"SEV-1": "\033[1;31m", "SEV-2": "\033[33m", "SEV-3": "\033[36m"}
RESET = "\033[0m"


def add_arguments(parser) -> None:
    parser.add_argument("--duration", type=float, default=180.0,
                        help="stop after this many seconds (default 180)")
    # Seed 5 scripts a cost spike and a false-refusal spike in the first simulated hours, so the
    # first incidents show up within a minute or two of wall-clock time.
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--start", default="2026-01-05T00:00:00Z",
                        help="event time of the first simulated event (default: a Monday)")
    parser.add_argument("--rate", type=float, default=1500.0,
                        help="events produced per wall-clock second (default 1500)")
    parser.add_argument("--sim-days", type=float, default=2.0,
                        help="simulated days of traffic to play (default 2)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="port for the worker's /metrics (default 9464, or a free one)")
    parser.add_argument("--no-color", action="store_true")


class _Child:
    """A worker subprocess whose stderr is copied to a log file and scanned for readiness."""

    def __init__(self, cmd: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        self.ready = threading.Event()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log_path, "ab") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                if b"semwatch: worker ready" in line:
                    self.ready.set()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _format_incident(inc: dict, colour: bool) -> str:
    sev = inc.get("severity", "")
    c, r = (SEV_COLOURS.get(sev, ""), RESET) if colour else ("", "")
    action = inc.get("event_action", "").upper()
    line = f"{c}{action:<8} {sev} {inc.get('kind')}{r}  {inc.get('summary')}"
    if action == "TRIGGER":
        seg = ", ".join(f"{k}={v}" for k, v in inc.get("segment", {}).items())
        line += f"\n         segment: {seg}\n         event time {inc.get('detected_at')}  dedup_key {inc.get('dedup_key')}"
        for ch in inc.get("suspected_changes", [])[:3]:
            line += f"\n         changed: {ch['field']} {ch.get('from')} -> {ch.get('to')} at {ch['first_seen']}"
        if inc.get("containment"):
            line += f"\n         {c}contain: {inc['containment']['summary']}{r}"
    return line


def run(args) -> int:
    from semwatch.simulator.generate import generate
    from semwatch.simulator.kafka_out import produce

    base = load_settings()
    colour = sys.stdout.isatty() and not args.no_color
    port = args.metrics_port or (9464 if _port_free(9464) else free_port())
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"semwatch-demo-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    broker: Optional[EmbeddedBroker] = None
    worker: Optional[_Child] = None
    counts = {"trigger": 0, "resolve": 0}
    view = ProblemView(colour)
    deadline = time.monotonic() + args.duration
    try:
        broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
        print(f"semwatch demo: embedded broker at {broker.bootstrap}")
        settings = base.model_copy(update={"broker_url": broker.url})
        env = dict(os.environ, SEMWATCH_BROKER_URL=broker.url, SEMWATCH_METRICS_PORT=str(port),
                   SEMWATCH_CONFIG_DIR=str(settings.config_dir), SEMWATCH_LOG_LEVEL="WARNING")
        worker = _Child([sys.executable, "-m", "semwatch.cli", "worker"], env, workdir / "worker.log")
        print(f"semwatch demo: starting a worker (log: {workdir / 'worker.log'})")
        while not worker.ready.wait(0.5):
            if worker.proc.poll() is not None:
                print(f"semwatch demo: the worker exited with {worker.proc.returncode}; "
                      f"see {workdir / 'worker.log'}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("semwatch demo: the worker did not become ready in time", file=sys.stderr)
                return 1
        print(f"semwatch demo: worker ready; metrics at http://127.0.0.1:{port}/metrics")

        start = parse_ts(args.start)
        events, labels = generate(args.seed, start, args.sim_days * 86400)
        minor = sum(1 for lab in labels if is_optional(lab))
        labels = [lab for lab in labels if not is_optional(lab)]
        print(f"semwatch demo: playing {args.sim_days:g} simulated days at {args.rate:g} events/s; "
              f"{len(labels)} scripted incidents (and {minor} minor provider error bursts):")
        for lab in labels:
            print(f"         {lab['kind']:<20} {lab['start']}  {lab.get('segment')}")
        producer = threading.Thread(
            target=lambda: produce(settings, settings.topics.runs, events, rate=args.rate, stop=stop),
            daemon=True)
        producer.start()
        print("semwatch demo: incidents as they are emitted (Ctrl-C to stop):\n")
        _follow_incidents(settings, deadline, stop, lambda inc: _show(inc, counts, view), worker)
    except KeyboardInterrupt:
        print("\nsemwatch demo: interrupted")
    finally:
        stop.set()
        if worker is not None and worker.proc.poll() is None:
            _print_progress(port)
            worker.stop()
        if broker is not None:
            broker.stop()
        print(f"semwatch demo: stopped; {counts['trigger']} triggers, {counts['resolve']} resolves, "
              f"{len(view.problems)} problem(s) paged:")
        for line in view.summary():
            print(line)
    return 0


def _print_progress(port: int) -> None:
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    except OSError:
        return
    values = {}
    for line in text.splitlines():
        if line.startswith("semwatch_") and " " in line:
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    dead = sum(v for k, v in values.items() if k.startswith("semwatch_events_dead_lettered_total"))
    last = values.get("semwatch_last_event_timestamp_seconds")
    upto = datetime.fromtimestamp(last, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if last else "-"
    print(f"semwatch demo: worker processed {values.get('semwatch_events_processed_total', 0):,.0f} events "
          f"(event time up to {upto}), {dead:,.0f} dead-lettered, "
          f"{values.get('semwatch_events_late_total', 0):,.0f} late")


class ProblemView:
    """The incident stream as an on-call engineer should see it: one block per problem (the
    incidents sharing a group_key), its members listed under it as they join and resolve.

    >>> view = ProblemView(colour=False)
    >>> seg = {"app": "a", "route": "r"}
    >>> lines = view.show({"event_action": "trigger", "severity": "SEV-2", "kind": "token_spike",
    ...     "detector": "loop", "summary": "a loop", "segment": seg, "group_key": "p/1", "dedup_key": "loop/1"})
    >>> lines += view.show({"event_action": "trigger", "severity": "SEV-3", "kind": "cost_spike",
    ...     "detector": "cost", "summary": "pricier", "segment": seg, "group_key": "p/1", "dedup_key": "cost/1"})
    >>> [line.split("  ")[0] for line in lines if not line.startswith(" ")]
    ['PROBLEM 1 TRIGGER']
    >>> view.problems["p/1"]["members"]
    {'loop/1': 'open', 'cost/1': 'open'}
    """

    def __init__(self, colour: bool):
        self.colour = colour
        self.problems: dict[str, dict] = {}

    def show(self, inc: dict) -> list[str]:
        key = inc.get("group_key") or inc.get("dedup_key", "?")
        action = inc.get("event_action")
        problem = self.problems.get(key)
        lines: list[str] = []
        if problem is None:
            problem = self.problems[key] = {"number": len(self.problems) + 1, "members": {},
                                            "severity": inc.get("severity", ""), "segment": inc.get("segment", {})}
            lines.append(f"PROBLEM {problem['number']} " + _format_incident(inc, self.colour))
        else:
            mark = "+" if action == "trigger" and inc.get("dedup_key") not in problem["members"] else " "
            lines.append(f"   {mark} problem {problem['number']}: " + _format_incident(inc, self.colour))
        problem["members"][inc.get("dedup_key", "?")] = "open" if action == "trigger" else "resolved"
        if action == "resolve" and all(v == "resolved" for v in problem["members"].values()):
            lines.append(f"   problem {problem['number']} resolved ({len(problem['members'])} incident(s))")
        return lines

    def summary(self) -> list[str]:
        out = []
        for problem in self.problems.values():
            state = "open" if any(v == "open" for v in problem["members"].values()) else "resolved"
            seg = "/".join(v for v in problem["segment"].values() if v)
            out.append(f"  problem {problem['number']} ({state}) {seg}: "
                       + ", ".join(k.split("/")[0] for k in problem["members"]))
        return out


def _show(inc: dict, counts: dict, view: ProblemView) -> None:
    counts[inc.get("event_action", "trigger")] = counts.get(inc.get("event_action", "trigger"), 0) + 1
    for line in view.show(inc):
        print(line, flush=True)


def _follow_incidents(settings, deadline: float, stop: threading.Event, on_incident, worker) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
                             consumer_timeout_ms=500)
    try:
        parts = None
        while time.monotonic() < deadline and not stop.is_set():
            if parts is None:
                found = consumer.partitions_for_topic(settings.topics.incidents)
                if found:
                    parts = [TopicPartition(settings.topics.incidents, p) for p in sorted(found)]
                    consumer.assign(parts)
                    consumer.seek_to_beginning(*parts)
                else:
                    time.sleep(0.5)
                    continue
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    on_incident(json.loads(rec.value))
            if worker.proc.poll() is not None:
                print(f"semwatch demo: the worker exited with {worker.proc.returncode}", file=sys.stderr)
                return
    finally:
        consumer.close()
