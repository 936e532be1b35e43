"""What changed recently: the suspected_changes of an incident."""

from semwatch.contract import RunEvent
from semwatch.engine.changes import WARMUP_S, ChangeTracker


def _ev(ts, **kw):
    base = dict(schema_version="1", event_id=f"e{ts}", run_id=f"r{ts}", ts=ts, app="bot",
                route="billing", model="m1", prompt_version="v1", provider="p")
    base.update(kw)
    return RunEvent(**base)


def _tracker():
    store = {}
    return ChangeTracker(3600, store.get, store.__setitem__), store


def test_starting_configuration_is_not_a_change():
    tracker, _ = _tracker()
    tracker.observe(_ev(0))
    tracker.observe(_ev(10, route="shipping", model="m2"))  # side by side from the start
    assert tracker.suspected({"app": "bot", "route": "billing"}, before=100, now=100) == []


def test_rollout_after_warmup_is_reported_with_from_and_to():
    tracker, _ = _tracker()
    tracker.observe(_ev(0))
    t = WARMUP_S + 500
    tracker.observe(_ev(t - 10))
    tracker.observe(_ev(t, prompt_version="v2"))
    changes = tracker.suspected({"app": "bot", "route": "billing", "prompt_version": "v2"},
                                before=t + 60, now=t + 120)
    assert [(c.field, c.from_, c.to) for c in changes] == [("prompt_version", "v1", "v2")]
    # Other routes of the app see it through the app scope only.
    other = tracker.suspected({"app": "bot", "route": "shipping"}, before=t + 60, now=t + 120)
    assert [(c.field, c.to) for c in other] == [("prompt_version", "v2")]


def test_changes_outside_the_lookback_are_not_suspected():
    tracker, _ = _tracker()
    tracker.observe(_ev(0))
    t = WARMUP_S + 10
    tracker.observe(_ev(t, model="m9"))
    assert tracker.suspected({"app": "bot", "route": "billing"}, before=t + 7200, now=t + 7300) == []
    assert tracker.suspected({"app": "bot", "route": "billing"}, before=t + 100, now=t + 200)


def test_a_change_seen_by_the_route_and_the_app_scope_is_listed_once():
    tracker, _ = _tracker()
    tracker.observe(_ev(0))
    tracker.observe(_ev(5, route="shipping", prompt_version="v7"))  # the app's other route
    t = WARMUP_S + 500
    tracker.observe(_ev(t - 100))
    tracker.observe(_ev(t - 10, route="shipping", prompt_version="v7"))
    tracker.observe(_ev(t, prompt_version="v2"))
    changes = tracker.suspected({"app": "bot", "route": "billing"}, before=t + 60, now=t + 120)
    # The app scope saw v7 -> v2 (v7 was the app's last active value), billing saw v1 -> v2.
    assert [(c.field, c.from_, c.to) for c in changes] == [("prompt_version", "v1", "v2")]
