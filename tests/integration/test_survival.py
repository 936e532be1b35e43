"""Survival: what a production worker must live through, with the real embedded broker (Tansu) and
real ``semwatch worker`` processes.

1. kill -9 in the middle of a stream, then restart: nothing injected is missed, re-delivered
   incidents keep their incident_id, and detector state comes back from the changelog.
2. Broker outage: the broker stops and comes back on the same port (memory storage: topics gone).
3. Poison pills: dead-lettered with a reason, the worker healthy, the offsets moving on.
4. Out-of-order and late events: windows are event-time windows; too-late events are counted and
   never put into a window (engine unit tests + the worker's late counter).
5. Hostile cardinality: 100k distinct tenant/model/route values keep state, series and memory bounded.
6. Privacy: seeded secrets and prompt text never reach the incidents topic, the log or /metrics.

Every wait is bounded; every worker and broker is stopped (kill -9 as a last resort) on the way out.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

from semwatch.broker import EmbeddedBroker
from semwatch.config import load_config
from semwatch.contract import RunEvent
from semwatch.engine.core import Engine
from streams.hop import unpack
from tests.support import REPO, WorkerProcess, consume, event_records, produce

pytestmark = pytest.mark.integration

T0 = 1767600000.0  # 2026-01-05T08:00:00Z
SUBJECT_APPS = ("order-agent", "shop-agent", "billing-agent", "returns-agent")


# -- helpers ---------------------------------------------------------------------------------------
def _ev(event_id: str, run_id: str, ts: float, app: str = "order-agent", **extra) -> dict:
    e = {"schema_version": "1", "event_id": event_id, "run_id": run_id, "ts": ts, "app": app,
         "route": "order-support", "model": "gpt-4o-mini", "provider": "openai", "input_tokens": 700,
         "output_tokens": 90, "latency_s": 1.3, "finish_reason": "stop",
         "response_text": "Your order has shipped and should arrive on Friday."}
    e.update(extra)
    return e


def _subject_event(run: str, k: int, ts: float, app: str) -> dict:
    return _ev(f"{run}-0", run, ts, app, subject={"user_id": [f"u_{k}"], "order_id": [f"#W_{k}"]},
               tool_calls=[{"name": "get_order", "call_id": f"{run}-c0", "arguments": {"order_id": f"#W_{k}"},
                            "result": {"status": "delivered"}}])


def _offending_event(run: str, k: int, ts: float, app: str) -> dict:
    # On a route of its own: wrong-entity actions of one segment (app, route) form one incident,
    # and these tests follow each injected run to its own incident.
    return _ev(f"{run}-1", run, ts, app, route=f"refunds-{run}", finish_reason="tool_calls", tool_calls=[
        {"name": "refund_order", "call_id": f"{run}-c1", "side_effect": True,
         "arguments": {"order_id": f"#W_{k}_other", "amount": 25.0}}])


def _normal_event(i: int, ts: float) -> dict:
    app = SUBJECT_APPS[i % len(SUBJECT_APPS)]
    if i % 10 == 0:  # a correct refund: in scope, never reported
        return _ev(f"n-{i}", f"n-{i}", ts, app, finish_reason="tool_calls",
                   subject={"user_id": [f"u_n{i}"], "order_id": [f"#W_n{i}"]},
                   tool_calls=[{"name": "refund_order", "call_id": f"n-{i}-c", "side_effect": True,
                                "arguments": {"order_id": f"#W_n{i}", "amount": 10.0}}])
    return _ev(f"n-{i}", f"n-{i}", ts, app)


def _wait(cond: Callable[[], bool], timeout: float, what: str, worker: Optional[WorkerProcess] = None,
          every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if worker is not None and not worker.alive():
            raise AssertionError(f"worker exited ({worker.proc.returncode}) waiting for {what}; log:\n"
                                 f"{worker.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"; log:\n{worker.log_tail()}" if worker is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(every)


def _metric(worker: WorkerProcess, name: str) -> float:
    try:
        return worker.metrics().get(name, 0.0)
    except OSError:
        return -1.0


def _scrape_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
    finally:
        admin.close()


def _end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Next offset per partition, by reading (Tansu's ListOffsets answers the last *batch*'s base
    offset + 1, not the high watermark, so end_offsets() under-reports)."""
    out: dict[tuple[str, int], int] = {}
    for topic in topics:
        for r in consume(bootstrap, topic, timeout=30, idle_s=2):
            out[(topic, r.partition)] = max(out.get((topic, r.partition), 0), r.offset + 1)
    return out


def _replay(events: list[dict], config_dir: Path = REPO / "config") -> list[dict]:
    engine = load_config(config_dir).build_engine()
    out = []
    for e in events:
        out.extend(json.loads(i.to_json()) for i in engine.process(RunEvent.model_validate(e)))
    return out


# -- 1. kill -9 mid-stream ------------------------------------------------------------------------
def test_kill9_mid_stream_loses_nothing_and_recovers_state_from_the_changelog(broker, workers, tmp_path):
    # Phase A: normal traffic, three complete wrong-entity runs and the *subject* events of four
    # "split" runs. Phase B: a long stream (killed in the middle) with five more wrong runs.
    # Phase C (produced while the worker is dead): the split runs' offending calls and two more runs.
    n_a, n_b, n_c = 2000, 20000, 600
    step = 0.05  # event-time spacing: the whole stream spans ~19 simulated minutes (< run idle TTL)
    phases: dict[str, list[dict]] = {"A": [], "B": [], "C": []}
    injected: dict[str, str] = {}  # run id -> phase of its offending call
    i = 0

    def emit(phase: str, count: int, specials: dict[int, list[Callable[[float], dict]]]) -> None:
        nonlocal i
        for j in range(count):
            ts = T0 + step * i
            phases[phase].append(_normal_event(i, ts))
            for make in specials.get(j, ()):
                phases[phase].append(make(ts + step / 2))
            i += 1

    def wrong(run: str, k: int, at: int, gap: int = 10) -> dict[int, list]:
        app = SUBJECT_APPS[k % len(SUBJECT_APPS)]
        return {at: [lambda ts: _subject_event(run, k, ts, app)],
                at + gap: [lambda ts: _offending_event(run, k, ts, app)]}

    def merge(*parts: dict[int, list]) -> dict[int, list]:
        out: dict[int, list] = defaultdict(list)
        for part in parts:
            for k, v in part.items():
                out[k].extend(v)
        return out

    split = [(f"split-{k}", 100 + k) for k in range(4)]
    spec_a = merge(*(wrong(f"wrong-A{k}", k, 1100 + 250 * k) for k in range(3)),
                   *({1300 + 100 * n: [lambda ts, r=r, k=k: _subject_event(r, k, ts, SUBJECT_APPS[k % 4])]}
                     for n, (r, k) in enumerate(split)))
    spec_b = merge(*(wrong(f"wrong-B{k}", 10 + k, 2000 + 3500 * k) for k in range(5)))
    spec_c = merge(*(wrong(f"wrong-C{k}", 20 + k, 100 + 200 * k) for k in range(2)),
                   *({50 + 100 * n: [lambda ts, r=r, k=k: _offending_event(r, k, ts, SUBJECT_APPS[k % 4])]}
                     for n, (r, k) in enumerate(split)))
    emit("A", n_a, spec_a)
    emit("B", n_b, spec_b)
    emit("C", n_c, spec_c)
    injected.update({f"wrong-A{k}": "A" for k in range(3)})
    injected.update({f"wrong-B{k}": "B" for k in range(5)})
    injected.update({f"wrong-C{k}": "C" for k in range(2)})
    injected.update({r: "C" for r, _ in split})
    everything = phases["A"] + phases["B"] + phases["C"]

    # The data is what we think it is: offline replay reports exactly the injected runs, nothing else.
    expected = _replay(everything)
    exp_triggers = [x for x in expected if x["event_action"] == "trigger"]
    assert sorted(x["evidence"]["run_ids"][0] for x in exp_triggers) == sorted(injected), exp_triggers
    assert {x["detector"] for x in exp_triggers} == {"wrong-entity-action"}
    expected_id = {x["evidence"]["run_ids"][0]: x["incident_id"] for x in exp_triggers}
    expected_keys = {x["dedup_key"] for x in exp_triggers}

    app_id = f"semwatch-kill-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=app_id, partitions=2,
                      extra_env={"SEMWATCH_SESSION_TIMEOUT_S": "6"})
    workers.append(w)
    w.start()

    produce(broker.bootstrap, "semwatch.runs", event_records(phases["A"]))
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(phases["A"]), 90,
          "phase A processed", w)
    # Phase A's offsets are committed (input and keyed topics): after the kill nothing of phase A is
    # read again, so the split runs' subjects can only come back through the state changelog.
    keyed = f"{app_id}.runs.keyed"
    ends = _end_offsets(broker.bootstrap, ["semwatch.runs", keyed])
    forwarded = sum(len(unpack(r.value)) for r in consume(broker.bootstrap, keyed, timeout=30, idle_s=2))
    assert forwarded == len(phases["A"]), (ends, w.metrics())
    _wait(lambda: all(_committed(broker.bootstrap, app_id).get(tp, -1) >= off for tp, off in ends.items()),
          30, f"offsets of phase A committed ({ends})", w, every=1.0)
    changelog = f"{app_id}-state-changelog"
    assert sum(_end_offsets(broker.bootstrap, [changelog]).values()) > 0, "no state in the changelog"

    # Phase B, killed mid-stream.
    producer = threading.Thread(target=produce, args=(broker.bootstrap, "semwatch.runs",
                                                      event_records(phases["B"])), daemon=True)
    producer.start()
    target = len(phases["A"]) + 4000
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= target, 120, "part of phase B", w, every=0.1)
    processed_at_kill = _metric(w, "semwatch_events_processed_total")
    w.kill9()
    assert w.proc.returncode == -9
    assert processed_at_kill < len(phases["A"]) + len(phases["B"]), "killed too late: not mid-stream"
    producer.join(120)
    assert not producer.is_alive()

    produce(broker.bootstrap, "semwatch.runs", event_records(phases["C"]))
    w.start()  # same app id (consumer group, changelog); the killed member's session times out
    assert w.ready_count == 2
    remaining = len(everything) - processed_at_kill
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= remaining, 110,
          f"the restarted worker to process at least the {remaining:.0f} events not processed before the kill", w)

    def all_reported(recs) -> bool:
        runs = {json.loads(r.value)["evidence"]["run_ids"][0] for r in recs}
        return set(injected) <= runs

    records = consume(broker.bootstrap, "semwatch.incidents", until=all_reported, timeout=60)
    incidents = [json.loads(r.value) for r in records]
    triggers = [x for x in incidents if x["event_action"] == "trigger"]
    reported = {x["evidence"]["run_ids"][0] for x in triggers if x["detector"] == "wrong-entity-action"}
    missing = set(injected) - reported
    assert not missing, f"not reported after kill -9 and restart: {missing}\n{w.log_tail()}"
    assert reported == set(injected), f"reported runs that were never injected: {reported - set(injected)}"

    # Re-delivered duplicates carry the same incident_id: one id per dedup_key, the replay's id.
    ids_per_key: dict[str, set[str]] = defaultdict(set)
    for x in triggers:
        ids_per_key[x["dedup_key"]].add(x["incident_id"])
    conflicting = {k: v for k, v in ids_per_key.items() if len(v) > 1}
    assert not conflicting, f"one problem paged under several incident ids: {conflicting}"
    assert set(ids_per_key) <= expected_keys, "a crash produced incidents that replay does not"
    for x in triggers:
        assert x["incident_id"] == expected_id[x["evidence"]["run_ids"][0]]
    # Keyed by dedup_key on the topic, as the pager expects.
    assert all(r.key == json.loads(r.value)["dedup_key"].encode() for r in records)

    # The state path: the split runs' subjects were committed before the kill and are not read again,
    # yet their offending calls (only in phase C, after the restart) were judged against them.
    for run, _ in split:
        assert run in reported
    m = w.metrics()
    assert m["semwatch_worker_ready"] == 1
    log = (tmp_path / "worker.log").read_text(errors="replace")
    recovery = log.split("semwatch: worker ready")[1]  # the restarted worker's part of the log
    table = recovery.split("Highwater for active changelog partitions", 1)
    assert len(table) == 2, "the restarted worker did not recover its table"
    highwaters = [int(h) for h in re.findall(r"^\|[^|\n]+\|\s*\d+\s*\|\s*(-?\d+)\s*\|",
                                             table[1].split("Reading Starts At", 1)[0], re.M)]
    assert highwaters and max(highwaters) >= 0, "the restarted worker found no changelog to recover from"
    code = w.stop()
    assert code == 0, f"worker exited with {code}; log:\n{w.log_tail()}"


# -- 2. broker outage ------------------------------------------------------------------------------
def test_broker_outage_worker_survives_and_processes_after_restart(workers, tmp_path):
    from semwatch.settings import Settings
    from streams.worker import ensure_topics

    broker = EmbeddedBroker().start()
    try:
        app_id = f"semwatch-outage-{uuid.uuid4().hex[:6]}"
        w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=app_id, partitions=2,
                          extra_env={"SEMWATCH_SESSION_TIMEOUT_S": "6"})
        workers.append(w)
        w.start()
        before = [_normal_event(i, T0 + i) for i in range(1, 200)]
        produce(broker.bootstrap, "semwatch.runs", event_records(before))
        _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(before), 60, "events before", w)

        port = broker.port
        broker.stop()
        outage_end = time.monotonic() + 12  # longer than the session timeout
        while time.monotonic() < outage_end:
            assert w.alive(), f"worker exited during the broker outage; log:\n{w.log_tail()}"
            assert _metric(w, "semwatch_worker_ready") >= 0  # /metrics still answers
            time.sleep(1)

        broker = EmbeddedBroker(port=port).start()  # memory storage: every topic is gone
        # Faust does not re-declare vanished topics; an operator (or a persistent broker) does.
        ensure_topics(Settings(broker_url=broker.url, app_id=app_id, partitions=2))
        received_before = _metric(w, "semwatch_events_received_total")
        processed_before = _metric(w, "semwatch_events_processed_total")
        after = [_normal_event(1000 + i, T0 + 3600 + i) for i in range(60)]
        after.append(_subject_event("wrong-after-outage", 7, T0 + 3700, "order-agent"))
        after.append(_offending_event("wrong-after-outage", 7, T0 + 3705, "order-agent"))
        produce(broker.bootstrap, "semwatch.runs", event_records(after))
        _wait(lambda: _metric(w, "semwatch_events_processed_total") >= processed_before + len(after), 90,
              "events produced after the broker restart", w)
        records = consume(broker.bootstrap, "semwatch.incidents", timeout=60, until=lambda recs: any(
            "wrong-after-outage" in json.loads(r.value)["evidence"]["run_ids"] for r in recs))
        assert any("wrong-after-outage" in json.loads(r.value)["evidence"]["run_ids"] for r in records), \
            w.log_tail()
        m = w.metrics()
        assert m["semwatch_events_received_total"] == received_before + len(after)
        assert m["semwatch_events_processed_total"] == processed_before + len(after)
        assert w.alive()
        code = w.stop(timeout=30)
        assert code == 0, f"worker exited with {code} after the outage; log:\n{w.log_tail()}"
    finally:
        broker.stop()


# -- 3. poison pills -------------------------------------------------------------------------------
def _raw_event(i: int, **fields) -> bytes:
    body = _ev(f"pp-{i}", f"pp-run-{i}", T0 + i)
    body.update(fields)
    return json.dumps(body).encode()


def _with(i: int, raw_field: str, raw_value: str) -> bytes:
    """An otherwise valid event whose field holds a raw (non-standard JSON) literal."""
    body = _ev(f"pp-{i}", f"pp-run-{i}", T0 + i)
    body[raw_field] = "__RAW__"
    return json.dumps(body).replace('"__RAW__"', raw_value).encode()


def test_poison_pills_are_dead_lettered_with_a_reason_and_the_stream_moves_on(broker, workers, tmp_path):
    ten_mb = b'{"schema_version": "1", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    missing = {k: v for k, v in json.loads(_raw_event(9)).items() if k not in ("run_id", "model", "ts")}
    pills: list[tuple[bytes, Optional[bytes], str, str]] = [  # key, value, reason, detail mentions
        (b"pill-utf8", b'{"schema_version": "1", "event_id": "\xff\xfe\xfa"}', "undecodable", "UTF-8"),
        (b"pill-10mb", ten_mb, "oversized", "10485"),
        (b"pill-deep-object", b'{"a":' * 1000 + b"1" + b"}" * 1000, "invalid_json", "nested"),
        (b"pill-deep-array", b'{"schema_version": "1", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
         "invalid_json", "nested"),
        (b"pill-types", _raw_event(1, input_tokens="lots", app=42, refusal="maybe"), "schema", "input_tokens"),
        (b"pill-missing", json.dumps(missing).encode(), "schema", "run_id"),
        (b"pill-huge-id", _raw_event(2, event_id="e" * 600_000), "schema", "event_id"),
        (b"pill-nan-tokens", _with(3, "input_tokens", "NaN"), "schema", "input_tokens"),
        (b"pill-nan-cost", _with(4, "cost_usd", "NaN"), "schema", "cost_usd"),
        (b"pill-negative", _raw_event(5, output_tokens=-3), "schema", "output_tokens"),
        (b"pill-infinity", _with(6, "latency_s", "Infinity"), "schema", "latency_s"),
        (b"pill-inf-ts", _with(7, "ts", "-Infinity"), "schema", "ts"),
        (b"pill-array", b'[{"schema_version": "1"}]', "invalid_json", "object"),
        (b"pill-empty", b"", "undecodable", "empty"),
        (b"pill-tombstone", None, "undecodable", "empty"),
        (b"pill-json-null", b"null", "invalid_json", "object"),
        (b"pill-truncated", b'{"schema_version": "1", "event_id": ', "invalid_json", ""),
    ]
    # Accepted: a 900 kB response text is within max_record_bytes (1 MiB) and processed in bounded time.
    big_ok = _raw_event(20, response_text=("I checked your order and it is on its way. " * 21000)[:900_000])
    assert len(big_ok) < 1024 * 1024
    valid = [big_ok] + [_raw_event(100 + k) for k in range(50)]
    wrong = [_subject_event("pp-wrong", 3, T0 + 200, "order-agent"),
             _offending_event("pp-wrong", 3, T0 + 201, "order-agent")]
    records: list[tuple[bytes, Optional[bytes]]] = [(k, v) for k, v, _, _ in pills]
    records += [(b"big-ok", big_ok)] + [(f"ok-{k}".encode(), v) for k, v in enumerate(valid[1:])]
    records += [(e["run_id"].encode(), json.dumps(e).encode()) for e in wrong]

    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=f"semwatch-pill-{uuid.uuid4().hex[:6]}",
                      partitions=1)  # one partition: the valid events sit behind every pill
    workers.append(w)
    w.start()
    produce(broker.bootstrap, "semwatch.runs", records)  # max_request_size 32 MiB: the 10 MB record goes
    n_valid = len(valid) + len(wrong)
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= n_valid, 90,
          "the valid events behind the pills", w)

    dlq = consume(broker.bootstrap, "semwatch.runs.dlq", timeout=60, until=lambda r: len(r) >= len(pills))
    got = {r.key: r for r in dlq}
    assert len(dlq) == len(pills) and set(got) == {k for k, *_ in pills}, sorted(got)
    for key, value, reason, mention in pills:
        headers = dict(got[key].headers)
        assert headers["semwatch.reason"].decode() == reason, (key, headers)
        assert mention in headers["semwatch.error"].decode(), (key, headers["semwatch.error"])
        assert headers["semwatch.source"].decode().startswith("semwatch.runs/0/")
        assert (got[key].value or b"") == (value or b""), key  # the original bytes

    incidents = consume(broker.bootstrap, "semwatch.incidents", timeout=60, until=lambda recs: any(
        "pp-wrong" in json.loads(r.value)["evidence"]["run_ids"] for r in recs))
    assert any("pp-wrong" in json.loads(r.value)["evidence"]["run_ids"] for r in incidents)

    reasons = defaultdict(int)
    for _, _, reason, _ in pills:
        reasons[reason] += 1
    m = w.metrics()
    assert m["semwatch_events_received_total"] == len(records)
    assert m["semwatch_events_valid_total"] == n_valid
    assert m["semwatch_events_processed_total"] == n_valid
    for reason in ("undecodable", "invalid_json", "schema", "oversized"):
        assert m[f'semwatch_events_dead_lettered_total{{reason="{reason}"}}'] == reasons[reason], reason
    assert m["semwatch_worker_ready"] == 1
    _wait(lambda: _metric(w, "semwatch_consumer_lag_records") == 0, 20, "consumer lag back to 0", w)
    # The offsets moved past every pill: a restarted worker of the same group would not see them again.
    code = w.stop()
    assert code == 0, f"worker exited with {code}; log:\n{w.log_tail()}"
    committed = _committed(broker.bootstrap, w.env["SEMWATCH_APP_ID"])
    assert committed[("semwatch.runs", 0)] == len(records)


# -- 4. out-of-order and late events ---------------------------------------------------------------
WINDOW_RULE = {
    "name": "error-count", "type": "threshold", "field": "error_type", "aggregate": "count",
    "group_by": ["app"], "window_s": 60, "bucket_s": 60, "min_volume": 0, "above": 5,
    "for_s": 0, "clear_for_s": 0, "severity": "SEV-2",
}


def _window_engine(tmp_path: Path, lateness: float = 300.0) -> Engine:
    d = tmp_path / f"cfg-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "config", d)
    (d / "semwatch.yaml").write_text(yaml.safe_dump({
        "engine": {"allowed_lateness_s": lateness, "tick_s": 5, "partition_by": ["app"]},
        "detectors": [], "rules": [WINDOW_RULE]}))
    return load_config(d).build_engine()


def _minute_traffic() -> list[RunEvent]:
    """10 minutes, 10 events a minute; minute 3 has 6 errors (> 5: fires), the others 2."""
    out = []
    for minute in range(10):
        errors = 6 if minute == 3 else 2
        for k in range(10):
            extra = {"error_type": "Timeout"} if k < errors else {}
            out.append(RunEvent.model_validate(_ev(f"w-{minute}-{k}", f"w-{minute}-{k}",
                                                   T0 + 60 * minute + 5 * k + 1, app="win-app", **extra)))
    return out


def _run(engine: Engine, events: list[RunEvent], end: float) -> list[tuple]:
    out = []
    for e in events:
        out.extend(engine.process(e.model_copy()))
    out.extend(engine.advance_to(end))
    return [(i.event_action, i.window_start, i.window_end, i.observed, i.incident_id) for i in out]


def test_out_of_order_within_lateness_gives_the_same_windows(tmp_path):
    events = _minute_traffic()
    in_order = _run(_window_engine(tmp_path), events, T0 + 1200)
    assert [a for a, *_ in in_order] == ["trigger", "resolve"]
    assert in_order[0][1:4] == ("2026-01-05T08:03:00.000Z", "2026-01-05T08:04:00.000Z", 6.0)
    # Each event delayed by up to 4 minutes (within the 5 minute allowed lateness), several times over.
    rng = random.Random(7)
    for _ in range(5):
        delayed = sorted(events, key=lambda e: e.ts + rng.uniform(0, 240))
        assert delayed != events
        engine = _window_engine(tmp_path)
        assert _run(engine, delayed, T0 + 1200) == in_order  # same windows, values and incident ids
        assert engine.stats.late == 0


def test_events_beyond_allowed_lateness_are_counted_and_never_windowed(tmp_path):
    events = _minute_traffic()
    baseline = _run(_window_engine(tmp_path), events, T0 + 1200)
    # 10 extra errors stamped in minute 1 arrive when event time is at minute 9 (8 min > 5 min late):
    # in minute 1's window they would fire (2 + 10 > 5), in the current window too (2 + 10 > 5).
    late = [RunEvent.model_validate(_ev(f"late-{k}", f"late-{k}", T0 + 60 + 30 + k, app="win-app",
                                        error_type="Timeout")) for k in range(10)]
    at = next(n for n, e in enumerate(events) if e.ts >= T0 + 9 * 60 + 20)
    engine = _window_engine(tmp_path)
    got = _run(engine, events[:at] + late + events[at:], T0 + 1200)
    assert engine.stats.late == 10
    assert [x[:4] for x in got] == [x[:4] for x in baseline], "late events changed a window"
    # Events just inside the lateness (4 min behind) are still counted, in their own window.
    engine = _window_engine(tmp_path)
    inside = [RunEvent.model_validate(_ev(f"in-{k}", f"in-{k}", T0 + 5 * 60 + 30 + k, app="win-app",
                                          error_type="Timeout")) for k in range(10)]
    at = next(n for n, e in enumerate(events) if e.ts >= T0 + 9 * 60 + 20)
    got = _run(engine, events[:at] + inside + events[at:], T0 + 1200)
    assert engine.stats.late == 0
    assert any(a == "trigger" and ws == "2026-01-05T08:05:00.000Z" and obs == 12.0
               for a, ws, we, obs, _ in got), got


def test_worker_counts_late_events(broker, workers, tmp_path):
    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=f"semwatch-late-{uuid.uuid4().hex[:6]}",
                      partitions=1)
    workers.append(w)
    w.start()
    on_time = [_ev(f"ot-{i}", f"ot-{i}", T0 + i) for i in range(301)]
    produce(broker.bootstrap, "semwatch.runs", event_records(on_time))
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(on_time), 60, "on-time events", w)
    assert _metric(w, "semwatch_events_late_total") == 0
    # Allowed lateness is 30 s (config/semwatch.yaml): 3 events 200 s behind are late, 2 at 10 s are not.
    stragglers = [_ev(f"late-{i}", f"late-{i}", T0 + 100 + i) for i in range(3)]
    stragglers += [_ev(f"ok-{i}", f"ok-{i}", T0 + 290 + i) for i in range(2)]
    produce(broker.bootstrap, "semwatch.runs", event_records(stragglers))
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(on_time) + 5, 60, "stragglers", w)
    assert _metric(w, "semwatch_events_late_total") == 3
    assert w.stop() == 0


def test_graceful_stop_processes_events_held_for_a_slow_partition(broker, workers, tmp_path):
    # Events wait in the reorder buffer while another input partition lags in event time. A stop
    # (or rebalance) must not wait for that partition, which may never catch up: the held events are
    # processed and committed, and the worker exits promptly with 0.
    from kafka import KafkaProducer

    app_id = f"semwatch-held-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=app_id, partitions=2,
                      extra_env={"SEMWATCH_REORDER_IDLE_S": "600"})  # the slow one never goes idle
    workers.append(w)
    w.start()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(5):  # partition 1 has reached T0 + 4 ...
        producer.send("semwatch.runs", json.dumps(_ev(f"slow-{i}", f"slow-{i}", T0 + i)).encode(), partition=1)
    for i in range(40):  # ... partition 0 is minutes ahead: its events wait for partition 1
        producer.send("semwatch.runs", json.dumps(_ev(f"fast-{i}", f"fast-{i}", T0 + 300 + i)).encode(),
                      partition=0)
    producer.flush()
    producer.close()
    _wait(lambda: _metric(w, "semwatch_events_buffered") == 40
          and _metric(w, "semwatch_events_processed_total") == 5, 60, "40 events held in the buffer", w)
    started = time.monotonic()
    code = w.stop(timeout=20)
    assert code == 0, f"worker exited with {code} after {time.monotonic() - started:.0f}s; log:\n{w.log_tail()}"
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert re.search(r"processed 40 held events", log), w.log_tail()
    keyed = f"{app_id}.runs.keyed"
    committed = {tp: o for tp, o in _committed(broker.bootstrap, app_id).items() if tp[0] == keyed}
    assert committed == _end_offsets(broker.bootstrap, [keyed]), "held events were processed but not committed"


# -- 5. hostile cardinality ------------------------------------------------------------------------
SMALL_CAP = 1000


def _capped_config(tmp_path: Path, cap: int = SMALL_CAP) -> Path:
    """The repo config with every detector's and rule's max_segments set to ``cap``."""
    d = tmp_path / "capped-config"
    shutil.copytree(REPO / "config", d)
    cfg = yaml.safe_load((d / "semwatch.yaml").read_text())
    for item in cfg["detectors"] + cfg["rules"]:
        item["max_segments"] = cap
    (d / "semwatch.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def _hostile(i: int) -> dict:
    return _ev(f"h-{i}", f"h-run-{i}", T0 + 0.01 * i, app=f"app-{i % 3}", route=f"route-{i}",
               model=f"model-{i}", tenant=f"tenant-{i}", prompt_version=f"pv-{i}",
               response_text="Sure, here you go.")


def test_engine_state_is_bounded_by_max_segments_under_hostile_cardinality(tmp_path):
    engine = load_config(_capped_config(tmp_path)).build_engine()
    n = 100_000
    for i in range(n):
        engine.process(RunEvent.model_validate(_hostile(i)))
    detectors = engine.detectors
    # Per detector at most max_segments; the change history per (app, route) at most the largest cap
    # and a tenth; plus, for each of the three apps, its clock and its event-id memory (at most
    # twice the dedup window in buckets, and the bucket being filled).
    largest = max(d.params.max_segments for d in detectors)
    o = engine.options
    per_app = 1 + 2 * math.ceil(o.dedup_window_s / o.dedup_bucket_s) + 1
    bound = sum(d.params.max_segments for d in detectors) + largest + largest // 10 + 3 * per_app
    assert len(engine.data) <= bound, {k.split("|")[0] for k in engine.data}
    per_prefix = defaultdict(int)
    for key in engine.data:
        per_prefix[key.split("|", 1)[0]] += 1
    for d in detectors:
        assert per_prefix[d.name] <= d.params.max_segments, (d.name, per_prefix[d.name])
    # The change history: the largest cap for established apps, plus a tenth of it for apps still
    # on probation (kept apart so that a flood of new apps never evicts an established app's).
    cap = max(d.params.max_segments for d in detectors)
    assert per_prefix["__changes__"] <= cap + cap // 10
    assert engine.segments_active() == {d.name: per_prefix[d.name] for d in detectors}
    # The bounded state is still a working state: indexes rebuilt from it match.
    copy = load_config(_capped_config(tmp_path / "again")).build_engine(data=dict(engine.data))
    assert copy.segments_active() == engine.segments_active()
    assert len(copy.changes._lru) == per_prefix["__changes__"]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _settled_rss_kb(pid: int, seconds: float = 8.0) -> int:
    """The worker's resident size once idle: the lowest of samples over a few seconds.

    A burst leaves transient peaks (fetch and producer buffers, seen 60 MB above the floor for a
    second or two) that the allocator hands back soon after; retained state does not go away.
    """
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(_rss_kb(pid))
        time.sleep(0.5)
    return min(samples)


def _series(text: str) -> set[str]:
    return {line.rpartition(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_worker_series_and_memory_stay_bounded_under_hostile_cardinality(broker, workers, tmp_path):
    config_dir = _capped_config(tmp_path)
    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=f"semwatch-card-{uuid.uuid4().hex[:6]}",
                      partitions=1, config_dir=config_dir)
    workers.append(w)
    w.start()
    warm = [_ev(f"warm-{i}", f"warm-{i}", T0 - 600 + i) for i in range(500)]
    produce(broker.bootstrap, "semwatch.runs", event_records(warm))
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(warm), 60, "warm-up", w)
    time.sleep(6)  # one gauge refresh
    series_before = _series(_scrape_text(w.metrics_port))
    rss_idle = _settled_rss_kb(w.proc.pid)

    # Every hostile event is a new segment for every detector. The first 40k fill what is capped:
    # 1000 segments per detector within the first ~2k events, and each app's event-id memory
    # (2 x 300 s of event time at 100 events/s) by 60k. The next two 20k each find it all full.
    # Timeouts are generous (about 400 events/s here): this checks memory, not speed.
    fill, step = 40_000, 20_000
    done = 0
    floors = []
    for size in (fill, step, step):
        produce(broker.bootstrap, "semwatch.runs", event_records(_hostile(i) for i in range(done, done + size)))
        done += size
        target = len(warm) + done
        _wait(lambda t=target: _metric(w, "semwatch_events_processed_total") >= t, 600,
              f"{done} hostile events", w)
        floors.append(_settled_rss_kb(w.proc.pid))
    time.sleep(6)  # one gauge refresh
    text = _scrape_text(w.metrics_port)
    series_after = _series(text)

    new = series_after - series_before
    n_detectors = len(load_config(config_dir).detector_params)
    # New series can only be per detector (segments_active, incidents by kind/severity/action).
    assert len(new) <= 3 * n_detectors, sorted(new)[:20]
    for hostile in ("tenant-", "route-", "model-", "pv-", "h-run-"):
        assert hostile not in text, f"a hostile label value leaked into /metrics: {hostile}"
    # Memory: state is capped at ~(detectors + 1) x 1000 entries of a few kB each (a few tens of MB);
    # buffers are bounded by batch and fetch sizes. Unbounded state grows ~15 kB per hostile event
    # (measured in process), ~600 MB over the last 40k. Bounded, those 40k move the idle floor by
    # noise only (seen here: -5 to +20 MB), and the whole run stays within 300 MB of the idle worker.
    after_fill, after_steady = floors[0], floors[-1]
    assert after_steady - after_fill <= 64 * 1024, (rss_idle, floors)
    assert max(floors) - rss_idle <= 300 * 1024, (rss_idle, floors)
    print("hostile-cardinality RSS (kB): idle", rss_idle, "after fill and each step", floors)
    assert w.stop() == 0


# -- 6. privacy end to end -------------------------------------------------------------------------
def test_worker_keeps_secrets_out_of_incidents_logs_and_metrics(broker, workers, tmp_path):
    from tests.test_privacy import SECRETS, assert_no_leak, expected_triggers, generated_pii, privacy_traffic

    events, _ = privacy_traffic()
    log_path = tmp_path / "worker.log"
    w = WorkerProcess(broker.url, log_path, app_id=f"semwatch-priv-{uuid.uuid4().hex[:6]}", partitions=1)
    workers.append(w)
    w.start()
    bad = [(b"bad-ts", json.dumps({**events[0], "ts": f"{SECRETS['email']} {SECRETS['openai_key']}"}).encode()),
           (b"bad-tokens", json.dumps({**events[0], "input_tokens": SECRETS["phone_us"]}).encode())]
    produce(broker.bootstrap, "semwatch.runs", list(event_records(events)) + bad)
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(events), 110, "privacy traffic", w)
    _wait(lambda: _metric(w, 'semwatch_events_dead_lettered_total{reason="schema"}') >= 2, 30,
          "the secret-laden bad records dead-lettered", w)
    records = consume(broker.bootstrap, "semwatch.incidents", timeout=60, idle_s=5)
    incidents = [json.loads(r.value) for r in records]
    expected_triggers(incidents)  # all three injected incidents were raised
    pii = generated_pii(events)
    raw = b"\n".join((r.key or b"") + b" " + r.value for r in records).decode()
    metrics_text = _scrape_text(w.metrics_port)
    assert w.stop() == 0
    log_text = log_path.read_text(errors="replace")
    assert "dead-lettered" in log_text and "incident trigger" in log_text  # the log did see it all
    assert_no_leak(raw, "the incidents topic", pii)
    assert_no_leak(metrics_text, "/metrics", pii)
    assert_no_leak(log_text, "the worker log", pii)
