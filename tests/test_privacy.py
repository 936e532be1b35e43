"""Privacy: seeded emails, phone numbers, API keys and prompt text never reach incident records, log
lines or metrics — even when the very events that trigger the incidents carry them.

The traffic (also used by the worker-level check in tests/integration/test_survival.py): generated
background traffic (with the generator's own fake PII), plus three injected incidents whose texts are
full of seeded secrets: a false-refusal spike (its evidence keeps redacted excerpts of the refused
responses), a wrong-entity refund (tool arguments and call id carry an email and a key) and an
error-rate breach.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from semwatch.config import load_config
from semwatch.contract import RunEvent
from semwatch.contract.redact import redact
from semwatch.ingest.validation import validate_record
from semwatch.simulator.generate import generate
from sinks.kafka import incident_record
from sinks.metrics import WorkerMetrics

REPO = Path(__file__).resolve().parent.parent
START = 1767600000.0  # 2026-01-05T08:00:00Z, a Monday morning

MARKER = "PROMPT-MARKER-c41d7e0b"  # in request texts only: raw prompt text must never come out
SECRETS = {
    "email": "zed.privacy-7731@example.org",
    "email2": "Mallory.O'Hara+billing@corp-mail.example.co.uk",
    "phone_us": "+1 (415) 555-0199",
    "phone_fr": "+33 6 12 34 56 78",
    "phone_plain": "212.555.0147",
    "openai_key": "sk-proj-Q9xT4mZ2bL7vK1nR8sW3yH6c",
    "aws_key": "AKIAQ7ZP3KXW5NRM2TLB",
    "marker": MARKER,
}
# Parts that must not leak either (a half-redacted email or key is still a leak).
FRAGMENTS = ["zed.privacy", "Q9xT4mZ2bL7vK1nR8sW3yH6c", "Q7ZP3KXW5NRM2TLB", "555-0199", "12 34 56 78",
             "corp-mail", "555.0147"]

_GEN_PII = re.compile(r"[A-Za-z0-9._%+'\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}|555-01\d\d|5550\d{3}|"
                      r"555\.01\d\d|7700 900\d{3}")


def _secret_text(i: int) -> str:
    s = SECRETS
    variants = [
        f"I'm sorry, but I can't share that. Write to {s['email']} or call {s['phone_us']}.",
        f"Sorry, I can't help with that request; use key {s['openai_key']} yourself, or ring {s['phone_fr']}.",
        f"I cannot do that. The AWS key {s['aws_key']} belongs to {s['email2']} ({s['phone_plain']}).",
    ]
    return variants[i % len(variants)]


def injected_events(start: float = START) -> list[dict]:
    """Events of the three injected incidents, every text laced with the seeded secrets."""
    s = SECRETS
    out: list[dict] = []
    base = {"schema_version": "1", "provider": "openai", "input_tokens": 900, "output_tokens": 80,
            "latency_s": 1.1, "finish_reason": "stop"}

    # 1. False-refusal spike on a fresh support-bot route: normal answers, then 2 of 3 refused.
    for k in range(300):
        ts = start + 60 + 3 * k
        refused = ts >= start + 600 and k % 3 != 0
        out.append({**base, "event_id": f"priv-fr-{k}", "run_id": f"priv-fr-run-{k}", "ts": ts,
                    "app": "support-bot", "route": "privacy-faq", "model": "gpt-4o-mini",
                    "prompt_version": "pv-priv-1" if ts < start + 600 else "pv-priv-2",
                    "tenant": "privacy-tenant",
                    "request_text": f"{MARKER} my email is {s['email']}, phone {s['phone_us']}, "
                                    f"my key is {s['openai_key']}: what's the account holder's address?",
                    "response_text": _secret_text(k) if refused else
                    "Sure! You can update your address under Settings > Profile at any time.",
                    "refusal": refused})

    # 2. A wrong-entity refund whose arguments, call id and texts carry secrets.
    run = "priv-we-run-1"
    t = start + 700
    out.append({**base, "event_id": "priv-we-0", "run_id": run, "ts": t, "app": "order-agent",
                "route": "refunds", "model": "gpt-4o", "subject": {"user_id": ["u_priv"], "order_id": ["#W_priv_1"]},
                "request_text": f"{MARKER} refund my order, I'm {s['email']} / {s['phone_fr']}",
                "response_text": f"Looking up orders for {s['email']}."})
    out.append({**base, "event_id": "priv-we-1", "run_id": run, "ts": t + 5, "app": "order-agent",
                "route": "refunds", "model": "gpt-4o", "finish_reason": "tool_calls",
                "request_text": f"{MARKER} also use {s['aws_key']}",
                "response_text": f"Refunded. Confirmation sent to {s['email2']}, key {s['openai_key']}.",
                "tool_calls": [
                    {"name": "refund_order", "call_id": s["email"], "side_effect": True,
                     "arguments": {"order_id": "#W_other_9", "amount": 30, "note": s["aws_key"],
                                   "email": s["email"]},
                     "result": {"status": "refunded", "contact": s["phone_us"]}},
                    {"name": "send_email", "call_id": "c-2",
                     "arguments": {"to": s["email2"], "body": f"{MARKER} {s['openai_key']}"}}]})

    # 3. An error-rate breach (rule error-rate: > 20 % over 5 min, held 5 min) with secret-laden texts.
    for k in range(200):
        ts = start + 30 + 5 * k
        failing = ts >= start + 300 and k % 2 == 0
        ev = {**base, "event_id": f"priv-er-{k}", "run_id": f"priv-er-run-{k}", "ts": ts,
              "app": "privacy-app", "route": "chat", "model": "priv-model",
              "request_text": f"{MARKER} {s['email']} {s['phone_plain']}",
              "response_text": _secret_text(k + 1) if failing else "Done."}
        if failing:
            ev["error_type"] = "AuthenticationError"
        out.append(ev)
    return out


def privacy_traffic(start: float = START) -> tuple[list[dict], list[dict]]:
    """(all events sorted by event time, injected events)."""
    background, _ = generate(seed=3, start=start, duration_s=1800, rate=2.0, incidents=False)
    background = list(background)
    for i, e in enumerate(background):  # some background prompts carry the secrets too
        if i % 7 == 0:
            e["request_text"] = f"{MARKER} {e.get('request_text') or ''} {SECRETS['openai_key']}"
    injected = injected_events(start)
    events = background + injected
    events.sort(key=lambda e: RunEvent.model_validate(e).ts)
    return events, injected


def generated_pii(events: list[dict]) -> set[str]:
    found: set[str] = set()
    for e in events:
        for f in ("request_text", "response_text"):
            found.update(m.group(0) for m in _GEN_PII.finditer(e.get(f) or ""))
    return found


def assert_no_leak(text: str, where: str, extra: set[str] = frozenset()) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} ({value!r}) leaked into {where}"
    for frag in FRAGMENTS:
        assert frag not in text, f"fragment {frag!r} leaked into {where}"
    leaked = sorted(v for v in extra if v in text)
    assert not leaked, f"generated PII leaked into {where}: {leaked[:5]}"


def expected_triggers(incidents: list[dict]) -> dict[str, dict]:
    """The three injected incidents, by detector; fails when one is missing."""
    found = {}
    for inc in incidents:
        if inc["event_action"] != "trigger":
            continue
        seg = inc["segment"]
        if inc["detector"] == "false-refusal-spike" and seg.get("route") == "privacy-faq":
            found["false-refusal-spike"] = inc
        elif inc["detector"] == "wrong-entity-action" and "priv-we-run-1" in inc["evidence"].get("run_ids", []):
            found["wrong-entity-action"] = inc
        elif inc["detector"] == "error-rate" and seg.get("app") == "privacy-app":
            found["error-rate"] = inc
    missing = {"false-refusal-spike", "wrong-entity-action", "error-rate"} - set(found)
    assert not missing, f"injected incidents not raised: {missing}; got " + json.dumps(
        [(i["detector"], i["event_action"], i["segment"]) for i in incidents])[:2000]
    return found


@pytest.fixture(scope="module")
def traffic():
    return privacy_traffic()


@pytest.fixture(scope="module")
def replayed(traffic):
    events, _ = traffic
    engine = load_config(REPO / "config").build_engine()
    incidents = []
    for e in events:
        incidents.extend(engine.process(RunEvent.model_validate(e)))
    incidents.extend(engine.advance_to(START + 3 * 3600))  # resolves too
    return incidents


def test_seeded_secrets_are_in_the_input(traffic):
    """The check below is only worth something if the triggering events really carry the secrets."""
    events, injected = traffic
    blob = json.dumps(injected)
    for name, value in SECRETS.items():
        assert json.dumps(value)[1:-1] in blob, name
    assert generated_pii(events), "the generator no longer writes fake PII: the check is void"


def test_incident_records_carry_no_secrets(traffic, replayed):
    events, _ = traffic
    records = [json.loads(incident_record(i)) for i in replayed]
    found = expected_triggers(records)
    # The refusal evidence did excerpt the secret-laden responses, and redaction replaced them.
    excerpts = found["false-refusal-spike"]["evidence"].get("excerpts") or []
    assert excerpts, found["false-refusal-spike"]["evidence"]
    joined = " ".join(excerpts)
    assert "[email]" in joined and "[phone]" in joined and "[secret]" in joined, excerpts
    we = found["wrong-entity-action"]
    assert we["evidence"]["calls"][0]["call_id"].startswith("sha256:")  # an email as call id is hashed
    assert_no_leak(b"\n".join(incident_record(i) for i in replayed).decode(), "incident records",
                   generated_pii(events))


def test_log_lines_and_metrics_carry_no_secrets(traffic, replayed, caplog):
    events, _ = traffic
    metrics = WorkerMetrics()
    log = logging.getLogger("semwatch.worker")
    with caplog.at_level(logging.INFO, logger="semwatch.worker"):
        for inc in replayed:  # exactly what the worker logs and counts per incident
            metrics.incident(inc)
            log.info("incident %s %s %s %s", inc.event_action, inc.severity, inc.dedup_key, inc.summary)
    assert len(caplog.records) == len(replayed)
    assert_no_leak(caplog.text, "incident log lines", generated_pii(events))
    assert_no_leak(generate_latest(metrics.registry).decode(), "metrics", generated_pii(events))


BAD_WITH_SECRETS = {
    "ts": {"ts": f"{SECRETS['email']} {SECRETS['openai_key']}"},
    "schema_version": {"schema_version": SECRETS["aws_key"]},
    "input_tokens": {"input_tokens": SECRETS["phone_us"]},
    "model": {"model": [SECRETS["email"]]},
    "subject": {"subject": SECRETS["email2"]},
    "metrics": {"metrics": {"x": SECRETS["openai_key"]}},
    "tool_calls": {"tool_calls": [{"name": "", "arguments": SECRETS["email"]}]},
    "run_id": {"run_id": SECRETS["openai_key"] * 20},
}


@pytest.mark.parametrize("field", sorted(BAD_WITH_SECRETS))
def test_dead_letter_details_do_not_echo_values(field):
    """The dead-letter detail goes to the worker log and a DLQ header: it names the field, not the value."""
    event = {"schema_version": "1", "event_id": "e1", "run_id": "r1", "ts": START, "app": "a", "model": "m",
             "request_text": MARKER}
    event.update(BAD_WITH_SECRETS[field])
    verdict = validate_record(json.dumps(event).encode(), 1 << 20)
    assert verdict.event is None and verdict.reason == "schema"
    assert field in verdict.detail
    assert_no_leak(verdict.detail, f"the dead-letter detail for {field}")


@pytest.mark.parametrize("value", [v for k, v in SECRETS.items() if k != "marker"])
def test_redact_removes_each_seeded_secret(value):
    out = redact(f"I'm sorry, I can't. Contact {value} today.", 120)
    assert value not in out and "today" in out, out


def test_redact_does_not_leak_a_secret_cut_at_the_scan_limit():
    """Long texts are cut before the patterns run; a secret halved by that cut must not survive
    once earlier redactions have shrunk the excerpt enough to bring the cut into view."""
    pre = " ".join(f"customer.number{i:03d}.with.a.long.address@example-company.com" for i in range(7)) + " "
    for secret in (SECRETS["email"], SECRETS["openai_key"], SECRETS["phone_us"], SECRETS["phone_fr"]):
        for shift in range(0, len(secret) + 1, 3):
            text = pre + "y" * (480 - len(pre) - shift) + " " + secret + " and more text after it"
            out = redact(text, 120)
            assert_no_leak(out, f"redact() of a text cut {shift} characters into {secret!r}")


# -- secrets the patterns used to miss, and ordinary text they must leave alone ----------------------
MORE_SECRETS = {
    "aws secret after its name": ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                  ["wJalrXUtnFEMI", "bPxRfiCYEXAMPLEKEY", "K7MDENG"]),
    "aws secret in an env line": ("export AWS_SECRET_ACCESS_KEY='q8Zt+3vN/Lm0Kp7Rw2Xs9Yd4Bf6Hj1Gc5Qe8Ua3T'",
                                  ["q8Zt", "Lm0Kp7Rw2Xs9Yd4Bf6Hj1Gc5Qe8Ua3T"]),
    "aws secret on its own": ("the key Hx7/Qm2pL9+vR4tW8zK1nB6cF3yJ5dS0gA2eU7iO was rotated",
                              ["Hx7", "Qm2pL9", "vR4tW8zK1nB6cF3yJ5dS0gA2eU7iO"]),
    "my password is": ("ok so my password is hunter2 if you need it", ["hunter2"]),
    "password was, quoted": ('The password was "Tr0ub4dor&3" until Monday.', ["Tr0ub4dor"]),
    "a plain-word password": ("My password is swordfish, please log in for me.", ["swordfish"]),
    "the pin is": ("Sure, the pin is 4821 for the side door.", ["4821"]),
    "passcode:": ("Use passcode: 907133 at the kiosk.", ["907133"]),
    "one-time code": ("Your one-time code is 552901.", ["552901"]),
    "e-mail, accented local part": ("Escríbeme a josé.núñez@correo.es mañana.", ["josé", "núñez", "correo.es"]),
    "e-mail, IDN domain": ("Write to info@münchen-bäckerei.de today.", ["münchen", "info@"]),
    "e-mail, Chinese": ("请联系 用户名@例子.广告 谢谢", ["用户名", "例子"]),
    "e-mail, Cyrillic": ("пишите на иван.петров@почта.рф сегодня", ["иван", "петров", "почта"]),
    "IBAN with spaces": ("Please refund to DE89 3704 0044 0532 0130 00 by Friday.", ["3704", "0532 0130"]),
    "IBAN without spaces": ("IBAN GB82WEST12345698765432 (Westminster branch).", ["GB82WEST", "12345698765432"]),
    "IBAN with letters, then a word": ("Send it to FR14 2004 1010 0505 0001 3M02 606 ASAP.", ["2004 1010", "3M02"]),
    "IBAN with a typo, after the word": ("my IBAN: NL91 ABNA 0417 1643 01 thanks", ["ABNA", "0417 1643"]),
}


@pytest.mark.parametrize("name", sorted(MORE_SECRETS))
def test_redact_removes_credentials_iban_and_international_email(name):
    text, fragments = MORE_SECRETS[name]
    out = redact(text, 200)
    for frag in fragments:
        assert frag not in out, f"{frag!r} survived: {out!r}"
    assert "[" in out, out
    # The words around the secret stay readable.
    assert text.split()[0].strip("'\"") in out, out


ORDINARY = [
    "Your password is incorrect. Please try again or reset it from Settings.",
    "The password must be at least 12 characters long and is case-sensitive.",
    "The token limit was reached after 4096 tokens; please shorten the prompt.",
    "Tokens: 1500 in, 200 out. The token count is 1700 for this call.",
    "The secret ingredient is love, and the order ships in 3 days.",
    "The secret is out: we ship on Friday.",
    "Use the PIN pad at the front desk; the pin is located on the left.",
    "Your verification code is on its way, and the access code is required at the gate.",
    "Order #W1234 for 2 items totals 59.90 EUR and was delivered on 2026-01-05.",
    "Flight LH12 ABCD departs at 10:45 from gate B22; ISO 27001 applies to case ID ABCD1234.",
    "Reset your password at https://example.com/account/security/reset in two minutes.",
    "See https://github.com/Example/Repo2/blob/Main/src/Handler1 for the handler.",
    "Call center hours are 9 to 5, Monday to Friday; wait times are about 12 minutes.",
    "Compare the plans: Basic at 9.99 USD, Pro at 19.99 USD, Team at 49 USD per seat.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_redact_leaves_ordinary_sentences_alone(text):
    assert redact(text, 400) == text


# -- dead-letter details name no producer-chosen key ------------------------------------------------
@pytest.mark.parametrize("key", [SECRETS["email"], SECRETS["openai_key"], "customer 4821 hunter2"])
def test_dead_letter_details_do_not_echo_metrics_keys(key):
    event = {"schema_version": "1", "event_id": "e1", "run_id": "r1", "ts": START, "app": "a", "model": "m",
             "metrics": {"latency_ms": 12.5, key: "not a number"}}
    verdict = validate_record(json.dumps(event).encode(), 1 << 20)
    assert verdict.reason == "schema"
    assert verdict.detail.startswith("metrics.<key>: "), verdict.detail
    assert key not in verdict.detail and "hunter2" not in verdict.detail


# -- label values cannot merge two segments' state ------------------------------------------------------
def _labelled(i: int, app: str, route: str, run_id: str = "", **extra) -> RunEvent:
    return RunEvent.model_validate({
        "schema_version": "1", "event_id": f"lab-{i}", "run_id": run_id or f"lab-run-{i}", "ts": START + i,
        "app": app, "route": route, "model": "gpt-4o-mini", "prompt_version": "v1", "input_tokens": 500,
        "output_tokens": 50, "finish_reason": "stop", "response_text": "Done.", **extra})


@pytest.mark.parametrize("first, second", [
    (("shop\x1fpay", "refunds"), ("shop", "pay\x1frefunds")),  # the separator inside a value
    (("shop|pay", "refunds"), ("shop", "pay|refunds")),  # the detector-name separator
    (("shop\\", "\x1frefunds"), ("shop\\\x1f", "refunds")),  # and the escape character itself
])
def test_crafted_labels_get_their_own_state(first, second):
    engine = load_config(REPO / "config").build_engine()
    engine.process(_labelled(0, *first))
    keys_first = set(engine.data)
    engine.process(_labelled(1, *second))
    added = set(engine.data) - keys_first
    for key in keys_first - {"__engine__"}:
        prefix = key.split("|", 1)[0] + "|"
        assert any(k.startswith(prefix) for k in added), f"the second segment reused {key!r}"


def test_a_segment_value_cannot_pose_as_a_run_of_another_segment():
    engine = load_config(REPO / "config").build_engine()
    detector = next(d for d in engine.detectors if d.name == "run-tokens")
    segment = {"app": "a", "route": "r", "model": "m", "prompt_version": "v1"}
    run_key = engine._key(detector, {**segment, "run_id": "run-1"})
    posing = engine._key(detector, {**segment, "prompt_version": "v1\x1frun-1"})
    assert run_key != posing
    # Ordinary labels keep the keys they always had (a recorded replay gives the same output).
    assert engine._key(detector, segment) == "run-tokens|a\x1fr\x1fm\x1fv1"


def test_change_scopes_of_crafted_apps_and_routes_stay_apart():
    from semwatch.engine.changes import ChangeTracker

    keys = {tuple(ChangeTracker.scope_keys(seg)) for seg in (
        {"app": "a|b", "route": "c"}, {"app": "a", "route": "b|c"}, {"app": "a", "route": "*"})}
    assert len({k for pair in keys for k in pair}) == 5  # 3 route scopes, 2 app scopes (a|b, a)
    assert ChangeTracker.scope_keys({"app": "shop", "route": "refunds"}) == \
        ["__changes__|shop|refunds", "__changes__|shop|*"]
