"""Hostile input and faults, end to end: real ``semwatch worker`` processes on the embedded broker.

1. Kill loop: two workers share four input partitions while a killer SIGKILLs a random one every
   5-15 s (ten times, each restarted) and SIGSTOPs one for longer than the group session timeout.
   The incidents topic must hold exactly the incident ids an offline replay of the produced events
   gives: no missing one, no extra one (at-least-once: the same incident_id may appear twice; the
   copies, and records whose numbers differ from replay's, are counted and printed).
2. Clock poisoning: one app's producer clock runs far ahead (one event dated 2999, a stream 20 min
   ahead); the 2999 event is dead-lettered, and the other app detects on time, nothing of it late.
3. Recovery reads the whole last batch of the changelog (the embedded broker reports a partition's
   end as its last batch's first offset + 1; streams/faust_compat.py).

Every wait is bounded; every worker is stopped (kill -9 as a last resort) on the way out.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from semwatch.config import load_config
from semwatch.contract import RunEvent, parse_ts
from semwatch.offline.replay import replay_events
from tests.integration.test_survival import _committed, _metric, _wait
from tests.support import REPO, WorkerProcess, consume, event_records, produce

pytestmark = pytest.mark.integration

T0 = 1767600000.0  # 2026-01-05T08:00:00Z
SESSION_TIMEOUT_S = 6


# -- helpers ---------------------------------------------------------------------------------------
def true_end_offsets(bootstrap: str, topic: str, timeout: float = 20.0) -> dict[int, int]:
    """Next offset per partition. The embedded broker answers ListOffsets with the last batch's
    first offset + 1, so the reported end is only where the last batch starts: read on from there."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
        reading = [tp for tp in parts if ends[tp.partition] > 0]
        if reading:
            consumer.assign(reading)
            for tp in reading:
                consumer.seek(tp, ends[tp.partition] - 1)
            deadline = time.monotonic() + timeout
            quiet = 0
            while quiet < 2 and time.monotonic() < deadline:
                got = consumer.poll(timeout_ms=300)
                quiet = 0 if got else quiet + 1
                for tp, records in got.items():
                    ends[tp.partition] = max(ends[tp.partition], records[-1].offset + 1)
        return ends
    finally:
        consumer.close()


def _config_dir(tmp_path: Path, engine: dict | None = None, detectors: dict | None = None) -> Path:
    """The repo config with some engine options and detector params changed."""
    d = tmp_path / f"config-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "config", d)
    cfg = yaml.safe_load((d / "semwatch.yaml").read_text())
    cfg["engine"].update(engine or {})
    for item in cfg["detectors"] + cfg["rules"]:
        item.update((detectors or {}).get(item["name"], {}))
    (d / "semwatch.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def _in_stream(events: list[dict], config) -> list[dict]:
    """Replay's incidents (semwatch.offline.replay.replay_events) up to the last event, without the
    ones its final advance of event time adds: a worker's time stops at the last event."""
    full = [json.loads(i.to_json()) for i in replay_events((RunEvent.model_validate(e) for e in events),
                                                           config).incidents]
    engine = config.build_engine()
    upto = [json.loads(i.to_json()) for e in events for i in engine.process(RunEvent.model_validate(e))]
    assert full[:len(upto)] == upto  # the same engine, the same order
    return upto


def _ids(incidents: list[dict]) -> dict[str, set[tuple[str, str]]]:
    """Per detector: the distinct (event_action, incident_id) pairs."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for i in incidents:
        out[i["detector"]].add((i["event_action"], i["incident_id"]))
    return dict(out)


def _produce_paced(bootstrap: str, events: list[dict], partition_of, speed: float, errors: list) -> None:
    """Events in event-time order, ``speed`` event seconds per wall second, each app to its own
    input partition (key run_id, as the contract asks)."""
    from kafka import KafkaProducer

    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        start = time.monotonic()
        first = events[0]["ts"]
        for e in events:
            wait = start + (e["ts"] - first) / speed - time.monotonic()
            if wait > 0.02:
                time.sleep(wait)
            producer.send("semwatch.runs", key=e["run_id"].encode(), value=json.dumps(e).encode(),
                          partition=partition_of(e))
        producer.flush(60)
        producer.close(10)
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


# -- 1. the kill loop ------------------------------------------------------------------------------
# app -> (input partition, kind). Keyed partitions (murmur2 of the app name, 4 partitions): help-chat
# 0, order-agent 1, support-chat 2, shop-agent and billing-agent 3; every app comes from one input
# partition, so each app's events reach its engine in the producer's order whatever the faults.
APPS = {"order-agent": (0, "agent"), "shop-agent": (1, "agent"), "billing-agent": (2, "agent"),
        "support-chat": (2, "chat"), "help-chat": (3, "chat")}
AGENT_ROUTES = ("refunds", "orders")
KILL_DURATION_S = 20 * 60  # event time
KILL_SPEED = 6.0  # event seconds per wall second: ~200 s of producing


def _ev(app: str, run: str, step: int, ts: float, **extra) -> dict:
    e = {"schema_version": "1", "event_id": f"{run}-{step}", "run_id": run, "ts": round(ts, 3), "app": app,
         "model": "gpt-4o-mini", "provider": "openai", "input_tokens": 700, "output_tokens": 80,
         "latency_s": 1.1, "finish_reason": "tool_calls"}
    e.update(extra)
    return e


def _call(run: str, n: int, name: str, result=None, **arguments) -> dict:
    call = {"name": name, "call_id": f"{run}-c{n}", "arguments": arguments}
    if result is not None:
        call["result"] = result
    return call


def _agent_run(rng: random.Random, app: str, run: str, start: float, kind: str) -> list[dict]:
    """One order-agent style run: subject, reads, then an action on its order (or, ``wrong``, on
    another order; ``loop``: the same read again and again). Steps are seconds apart, so a run
    spans kills and restarts: its subject must come back from the changelog."""
    route = AGENT_ROUTES[int(run.rsplit("-", 1)[1]) % 2]
    k = rng.randrange(10**6)
    user, order = f"u_{k}", f"#W{k}"
    t = start
    out = [_ev(app, run, 0, t, route=route, subject={"user_id": [user], "order_id": [order]},
               tool_calls=[_call(run, 0, "get_user", {"tier": "gold"}, user_id=user)])]
    t += rng.uniform(4, 12)
    out.append(_ev(app, run, 1, t, route=route,
                   tool_calls=[_call(run, 1, "get_order", {"status": "delivered"}, order_id=order)]))
    step = 2
    if kind == "loop":  # the same call with the same arguments, 30 times
        for _ in range(30):
            t += rng.uniform(2, 4)
            out.append(_ev(app, run, step, t, route=route, input_tokens=500, output_tokens=30,
                           tool_calls=[_call(run, step, "get_order", {"status": "delivered"}, order_id=order)]))
            step += 1
    else:
        retries = rng.choice((0, 0, 1, 2, 3))  # a few repeats are normal
        for _ in range(retries):
            t += rng.uniform(2, 6)
            out.append(_ev(app, run, step, t, route=route,
                           tool_calls=[_call(run, step, "get_order", {"status": "delivered"}, order_id=order)]))
            step += 1
    # Slow runs act minutes after their subject was seen.
    t += rng.uniform(60, 150) if kind == "slow" else rng.uniform(4, 15)
    target = f"#W{k + 1}" if kind == "wrong" else order
    action = rng.choice(("refund_order", "cancel_order")) if kind != "wrong" else "refund_order"
    args = {"order_id": target, "amount": 20.0} if action == "refund_order" else {"order_id": target}
    out.append(_ev(app, run, step, t, route=route, tool_calls=[_call(run, step, action, {"ok": True}, **args)]))
    t += rng.uniform(2, 6)
    out.append(_ev(app, run, step + 1, t, route=route, finish_reason="stop", output_tokens=60,
                   response_text="Done: your order is taken care of."))
    return out


REFUSAL = "I'm sorry, but I can't help with that request."
ANSWER = "Sure: open Settings, choose Security and follow the reset link we email you."


def _chat(rng: random.Random, app: str, start: float, end: float, per_s: float, spike: tuple | None) -> list[dict]:
    """Chat requests; during ``spike`` (start, end, refusal rate) a new prompt version refuses
    ordinary questions, then is rolled back."""
    out, t, i = [], start, 0
    while True:
        t += rng.expovariate(per_s)
        if t >= end:
            return out
        in_spike = spike is not None and spike[0] <= t < spike[1]
        refused = rng.random() < (spike[2] if in_spike else 0.02)
        out.append({"schema_version": "1", "event_id": f"{app}-{i}", "run_id": f"{app}-r{i}", "ts": round(t, 3),
                    "app": app, "route": "faq", "model": "gpt-4o-mini", "provider": "openai",
                    "prompt_version": "v8" if in_spike else "v7", "conversation_id": f"{app}-c{i // 2}",
                    "input_tokens": 400, "output_tokens": 20 if refused else 150, "latency_s": 0.8,
                    "finish_reason": "stop", "refusal": refused, "response_text": REFUSAL if refused else ANSWER})
        i += 1


# Special runs per agent app: (minute of event time from which the next run is one, kind).
SPECIAL_RUNS = {"order-agent": [(4.5, "loop"), (6.0, "wrong"), (9.0, "loop")],
                "shop-agent": [(5.0, "loop"), (7.5, "wrong"), (10.0, "wrong")],
                "billing-agent": [(5.5, "wrong"), (8.0, "loop")]}


def kill_loop_traffic(seed: int = 5) -> tuple[list[dict], dict[str, set[str]]]:
    """20 minutes of event time: agent runs (a few loop, a few act on the wrong order, a quarter act
    minutes after their subject), chat with a refusal spike on help-chat (minutes 7-10), and quiet
    last minutes in which everything resolves. The events in event-time order, and the run ids of
    the loops and the wrong actions."""
    rng = random.Random(seed)
    events: list[dict] = []
    special: dict[str, set[str]] = {"loop": set(), "wrong": set(), "sentinel": set()}
    end = T0 + KILL_DURATION_S
    for app, (_, kind) in APPS.items():
        if kind == "chat":
            spike = (T0 + 7 * 60, T0 + 10 * 60, 0.45) if app == "help-chat" else None
            events += _chat(rng, app, T0, end, 3.0 if spike else 2.0, spike)
            continue
        plan = list(SPECIAL_RUNS[app])
        t, n = T0, 0
        while True:
            t += rng.expovariate(1 / 2.5)
            if t >= end - 4 * 60:
                break
            run = f"{app}-{n}"
            if plan and t >= T0 + 60 * plan[0][0]:
                kind = plan.pop(0)[1]
                special[kind].add(run)
            else:
                kind = "slow" if rng.random() < 0.25 else "normal"
            events += _agent_run(rng, app, run, t, kind)
            n += 1
        # The app's clock goes on to the end: its resolves are ticked by its own time.
        events += [_ev(app, f"{app}-tail-{j}", 0, end - 4 * 60 + 10 * j, route="orders", finish_reason="stop")
                   for j in range(24)]
    # Last of every app: a run that refunds an order outside its subject. Its incident on the topic
    # says the worker got through all of the app's events (each app's events arrive in order).
    for app in APPS:
        run = f"{app}-sentinel"
        special["sentinel"].add(run)
        events += [_ev(app, run, 0, end + 1, route="sentinel", subject={"order_id": [f"#S-{app}"]}),
                   _ev(app, run, 1, end + 2, route="sentinel", tool_calls=[
                       _call(run, 1, "refund_order", {"ok": True}, order_id=f"#S-{app}-other", amount=1.0)])]
    events.sort(key=lambda e: (e["ts"], e["event_id"]))
    return events, special


def _killer(workers: list[WorkerProcess], rng: random.Random, kills: int, stop: threading.Event,
            actions: list, errors: list) -> None:
    try:
        for n in range(kills):
            if stop.wait(rng.uniform(5, 15)):
                return
            i = rng.randrange(len(workers))
            workers[i].kill9()
            actions.append((round(time.monotonic(), 1), "kill -9", i))
            workers[i].start(timeout=180)
            actions.append((round(time.monotonic(), 1), "ready", i))
            if n == kills // 2:  # once: frozen past the session timeout, then thawed
                if stop.wait(rng.uniform(3, 6)):
                    return
                j = rng.randrange(len(workers))
                os.killpg(workers[j].proc.pid, signal.SIGSTOP)
                actions.append((round(time.monotonic(), 1), "SIGSTOP", j))
                time.sleep(SESSION_TIMEOUT_S + 4)
                os.killpg(workers[j].proc.pid, signal.SIGCONT)
                actions.append((round(time.monotonic(), 1), "SIGCONT", j))
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_kill_loop_two_workers_incidents_equal_replay(broker, workers, tmp_path):
    started = time.monotonic()
    events, special = kill_loop_traffic()
    # Resolves within the 20 minutes: shorter hold and auto-resolve than production defaults.
    config_dir = _config_dir(tmp_path, engine={"resolve_cooldown_s": 60},
                             detectors={"wrong-entity-action": {"auto_resolve_s": 240},
                                        "runaway-loop": {"quiet_s": 120}})
    config = load_config(config_dir)
    expected = _in_stream(events, config)
    want = _ids(expected)

    # The traffic is what it claims to be: replay pages the loops, the wrong actions and the spike,
    # and each of them resolves within the stream.
    def runs_named(detector: str) -> set[str]:
        return {r for i in expected if i["detector"] == detector and i["event_action"] == "trigger"
                for r in i["evidence"]["run_ids"]}

    assert runs_named("runaway-loop") and runs_named("runaway-loop") <= special["loop"], runs_named("runaway-loop")
    assert runs_named("wrong-entity-action") - special["sentinel"] <= special["wrong"]
    assert special["sentinel"] <= runs_named("wrong-entity-action")
    spikes = [i for i in expected if i["detector"] == "false-refusal-spike"]
    assert {i["segment"]["app"] for i in spikes} == {"help-chat"}
    for detector in ("runaway-loop", "wrong-entity-action", "false-refusal-spike"):
        actions = Counter(i["event_action"] for i in expected
                          if i["detector"] == detector and i["segment"].get("route") != "sentinel")
        assert actions["trigger"] >= 1 and actions["resolve"] == actions["trigger"], (detector, actions)

    app_id = f"semwatch-faults-{uuid.uuid4().hex[:6]}"
    for n in range(2):
        workers.append(WorkerProcess(broker.url, tmp_path / f"worker-{n}.log", app_id=app_id, partitions=4,
                                     config_dir=config_dir,
                                     extra_env={"SEMWATCH_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}))
    for w in workers:
        w.start(timeout=180)

    errors: list = []
    actions: list = []
    stop = threading.Event()
    producer = threading.Thread(target=_produce_paced, daemon=True, args=(
        broker.bootstrap, events, lambda e: APPS[e["app"]][0], KILL_SPEED, errors))
    killer = threading.Thread(target=_killer, daemon=True,
                              args=(workers, random.Random(11), 10, stop, actions, errors))
    producer.start()
    killer.start()
    producer.join(KILL_DURATION_S / KILL_SPEED + 120)
    killer.join(600)
    stop.set()
    assert not errors, f"{errors!r}; actions: {actions}"
    assert not producer.is_alive() and not killer.is_alive(), actions
    assert [a for _, a, _ in actions].count("kill -9") == 10 and "SIGSTOP" in [a for _, a, _ in actions]
    faults_done = time.monotonic()

    # Done when every app's last run (its sentinel) has its incident: each app's events reach its
    # engine in order, so the app's earlier events are processed and their incidents sent.
    def sentinels(records) -> bool:
        assert all(w.alive() for w in workers), [w.log_tail() for w in workers]
        seen = {r for rec in records for r in json.loads(rec.value)["evidence"].get("run_ids", ())}
        return special["sentinel"] <= seen

    records = consume(broker.bootstrap, "semwatch.incidents", until=sentinels, timeout=300, idle_s=6)
    assert sentinels(records), f"not every app processed to its end; actions {actions}"
    drained = time.monotonic()
    records = consume(broker.bootstrap, "semwatch.incidents", timeout=60, idle_s=6)
    got = [json.loads(r.value) for r in records]
    have = _ids(got)
    keyed = f"{app_id}.runs.keyed"
    done = _committed(broker.bootstrap, app_id)
    uncommitted = sum(max(0, end - done.get((keyed, p), 0))
                      for p, end in true_end_offsets(broker.bootstrap, keyed).items())

    per_id = Counter((i["event_action"], i["incident_id"]) for i in got)
    replay_count = Counter((i["event_action"], i["incident_id"]) for i in expected)
    extra_copies = sum(max(0, n - replay_count[k]) for k, n in per_id.items())
    # Every record should be a replay record, field for field; one whose numbers differ (the ids
    # agree) means state that came back different after a fault. Counted and shown, not asserted:
    # see the report of the fault tests (Faust's consumer around rebalances).
    replayed = defaultdict(list)
    for i in expected:
        replayed[i["incident_id"]].append(i)
    differing = [i for i in got if i not in replayed[i["incident_id"]]]
    for i in differing[:3]:
        twin = replayed[i["incident_id"]][0] if replayed[i["incident_id"]] else {}
        print(f"\n{i['detector']} {i['event_action']} {i['incident_id']} differs from replay's (worker, replay): "
              f"{ {k: (i.get(k), twin.get(k)) for k in sorted(set(i) | set(twin)) if i.get(k) != twin.get(k)} }")
    print(f"\nkill loop: {len(events)} events, {len(expected)} incidents in replay, {len(got)} records "
          f"on the topic, {extra_copies} re-sent copies, {len(differing)} with other numbers than replay's; "
          f"{uncommitted} keyed records not yet committed at the end; faults {faults_done - started:.0f} s, "
          f"drained {drained - faults_done:.0f} s later, total {time.monotonic() - started:.0f} s; actions {actions}")
    for detector in sorted(set(want) | set(have)):
        missing = want.get(detector, set()) - have.get(detector, set())
        extra = have.get(detector, set()) - want.get(detector, set())
        assert not missing and not extra, (
            f"{detector}: missing {sorted(missing)}, extra {sorted(extra)}\nextra records: "
            f"{[i for i in got if (i['event_action'], i['incident_id']) in extra][:3]}")
    for w in workers:
        assert w.stop(timeout=30) == 0, w.log_tail()


# -- 2. clock poisoning ----------------------------------------------------------------------------
def test_clock_poisoning_in_a_one_partition_worker(broker, workers, tmp_path):
    rng = random.Random(3)
    # App A: 25 minutes of chat; from minute 15 a new prompt version refuses 45% of ordinary requests.
    onset = T0 + 15 * 60
    a_events = _chat(rng, "help-chat", T0, T0 + 25 * 60, 1.0, (onset, T0 + 26 * 60, 0.45))
    # App B sends at the same moments, but its producer's clock reads 20 minutes ahead.
    b_arrivals = _chat(rng, "support-chat", T0, T0 + 25 * 60, 1.0, None)
    b_events = [{**e, "ts": e["ts"] + 20 * 60} for e in b_arrivals]
    arrival = sorted([(e["ts"], e) for e in a_events] + [(a["ts"], b) for a, b in zip(b_arrivals, b_events)],
                     key=lambda x: x[0])
    stream = [e for _, e in arrival]
    # ... and once, a record dated 2999.
    poison = {**b_events[len(b_events) // 3], "event_id": "b-2999", "run_id": "b-2999",
              "ts": parse_ts("2999-01-01T00:00:00Z")}
    stream.insert(len(stream) // 3, poison)

    config = load_config(REPO / "config")
    expected_a = _in_stream(a_events, config)
    a_triggers = [i for i in expected_a if i["event_action"] == "trigger"]
    assert any(i["detector"] == "false-refusal-spike" and parse_ts(i["detected_at"]) - onset < 300
               for i in a_triggers), a_triggers
    assert not [i for i in expected_a if i["event_action"] == "resolve"]  # the spike lasts to the end

    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=f"semwatch-clock-{uuid.uuid4().hex[:6]}",
                      partitions=1)
    workers.append(w)
    w.start()
    produce(broker.bootstrap, "semwatch.runs", event_records(stream))
    n_valid = len(a_events) + len(b_events)
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= n_valid, 120, "every valid event", w)
    dlq = consume(broker.bootstrap, "semwatch.runs.dlq", timeout=30, idle_s=3)
    assert [r.key for r in dlq] == [b"b-2999"]
    headers = dict(dlq[0].headers)
    assert headers["semwatch.reason"] == b"clock" and b"future" in headers["semwatch.error"], headers
    m = w.metrics()
    assert m['semwatch_events_dead_lettered_total{reason="clock"}'] == 1
    assert m["semwatch_events_processed_total"] == n_valid
    # B's own events come in order: any late event would be A's.
    assert m["semwatch_events_late_total"] == 0

    got = [json.loads(r.value) for r in consume(broker.bootstrap, "semwatch.incidents", timeout=60, idle_s=5)]
    got_a = [i for i in got if i["segment"].get("app") == "help-chat"]
    # A detects as if B did not exist: the same incidents (ids carry detected_at: on time), and B's
    # clock resolves nothing of A's.
    assert sorted(_ids(got_a).items()) == sorted(_ids(expected_a).items()), (got_a, expected_a)
    assert w.stop() == 0


# -- 3. recovery reads the whole last changelog batch -----------------------------------------------
def test_a_restarted_worker_recovers_every_record_of_the_last_changelog_batch(broker, workers, tmp_path):
    # Ten runs state their subject, one route each; one changelog write (one batch) holds their
    # states. After a restart each run refunds an order outside its subject: judged against the
    # recovered subject, every one is a wrong-entity action; a run whose state recovery missed has
    # no subject left and passes unchecked.
    app_id = f"semwatch-tail-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(broker.url, tmp_path / "worker.log", app_id=app_id, partitions=1)
    workers.append(w)
    w.start()
    runs = [f"tail-{k}" for k in range(10)]
    subjects = [_ev("order-agent", run, 0, T0 + k, route=f"r{k}",
                    subject={"user_id": [f"u_{k}"], "order_id": [f"#W{k}"]},
                    tool_calls=[_call(run, 0, "get_order", {"status": "delivered"}, order_id=f"#W{k}")])
                for k, run in enumerate(runs)]
    produce(broker.bootstrap, "semwatch.runs", event_records(subjects))
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(subjects), 60, "the subjects", w)
    _wait(lambda: all(_committed(broker.bootstrap, app_id).get((t, 0), -1) >= end
                      for t in ("semwatch.runs", f"{app_id}.runs.keyed")
                      for end in true_end_offsets(broker.bootstrap, t).values()), 30, "offsets committed", w)
    assert w.stop() == 0

    from kafka import KafkaConsumer, TopicPartition

    changelog = TopicPartition(f"{app_id}-state-changelog", 0)
    probe = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    reported = probe.end_offsets([changelog])[changelog]
    probe.close()
    actual = true_end_offsets(broker.bootstrap, changelog.topic)[0]
    # What this test is about: the last batch holds several records, and the broker reports its start.
    assert reported < actual, (reported, actual)

    w.start()
    refunds = [_ev("order-agent", run, 1, T0 + 60 + k, route=f"r{k}", tool_calls=[
        _call(run, 1, "refund_order", {"ok": True}, order_id=f"#W{k}-other", amount=5.0)])
        for k, run in enumerate(runs)]
    produce(broker.bootstrap, "semwatch.runs", event_records(refunds))
    _wait(lambda: _metric(w, "semwatch_events_processed_total") >= len(refunds), 60, "the refunds", w)
    # Incidents are acked by the broker before their events count as processed.
    incidents = [json.loads(r.value) for r in consume(broker.bootstrap, "semwatch.incidents", timeout=30,
                                                      idle_s=3)]
    flagged = {r for i in incidents if i["detector"] == "wrong-entity-action" for r in i["evidence"]["run_ids"]}
    assert flagged == set(runs), f"runs whose subject recovery lost: {sorted(set(runs) - flagged)}"
    assert w.stop() == 0
