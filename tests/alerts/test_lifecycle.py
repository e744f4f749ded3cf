"""Every branch of the alert lifecycle and of the notify decision, one test each."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.notifiers.base import NotifierSpec
from alerts.rules import Rule
from storage import alerts as db
from tests.alerts.conftest import Feed, events, make_engine

DRIFT = Rule("drift", "drift_share", ">", 0.3)
HIGH, LOW = {"drift_share": 0.6}, {"drift_share": 0.1}


def feed(store, clock, rules=(DRIFT,), notifiers=None, **settings) -> Feed:
    return Feed(make_engine(store, clock, rules, notifiers, **settings), store, clock)


def kinds(store) -> list[str]:
    return [d.kind for d in db.list_deliveries(store)]


def state(store, rule: Rule = DRIFT, model="churn", column="", segment="", version="v12") -> str:
    alert = db.get_alert(store, rule.instance_id(model, column, segment, version))
    return "inactive" if alert is None else alert.state


# -- lifecycle -------------------------------------------------------------------------


def test_breach_with_for_1_fires_at_once_and_notifies(store, clock):
    f = feed(store, clock)
    t = f.window(HIGH)
    assert events(t) == [("drift", "inactive", "firing")]
    assert t[0].notifiers == ("ops",)
    assert t[0].value == 0.6 and t[0].threshold == 0.3
    assert kinds(store) == ["firing"]
    alert = db.get_alert(store, t[0].alert_id)
    assert alert is not None
    assert (alert.state, alert.episode, alert.breaches) == ("firing", 1, 1)
    assert alert.fired_at == clock.now and alert.last_notified_at == clock.now


def test_breach_below_for_goes_pending_and_pending_never_notifies(store, clock):
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, for_windows=3),))
    assert events(f.window(HIGH)) == [("drift", "inactive", "pending")]
    assert f.window(HIGH) == []  # still pending, breaches counted
    assert db.list_alerts(store)[0]["breaches"] == 2
    assert kinds(store) == []


def test_pending_fires_after_for_consecutive_breaches(store, clock):
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, for_windows=2),))
    f.window(HIGH)
    t = f.window(HIGH)
    assert events(t) == [("drift", "pending", "firing")]
    assert kinds(store) == ["firing"]


def test_pending_clear_goes_back_to_inactive_silently(store, clock):
    rule = Rule("drift", "drift_share", ">", 0.3, for_windows=2)
    f = feed(store, clock, (rule,))
    f.window(HIGH)
    assert events(f.window(LOW)) == [("drift", "pending", "inactive")]
    assert kinds(store) == []
    # the run restarts: one more breach is pending again, not firing
    assert events(f.window(HIGH)) == [("drift", "inactive", "pending")]
    assert db.list_alerts(store) and db.list_alerts(store, state="inactive") == []


def test_firing_stays_firing_until_resolve_after_clear_windows(store, clock):
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, resolve_after=3),))
    f.window(HIGH)
    assert f.window(LOW) == [] and f.window(LOW) == []
    assert state(store) == "firing"
    # a breach in between restarts the clear count
    f.window(HIGH)
    assert f.window(LOW) == [] and f.window(LOW) == []
    assert events(f.window(LOW)) == [("drift", "firing", "resolved")]
    assert kinds(store) == ["firing", "resolved"]


def test_firing_resolves_and_notifies_once(store, clock):
    f = feed(store, clock)
    f.window(HIGH)
    t = f.window(LOW)
    assert events(t) == [("drift", "firing", "resolved")]
    assert t[0].notifiers == ("ops",)
    assert f.window(LOW) == []  # resolved stays resolved, nothing more is sent
    assert kinds(store) == ["firing", "resolved"]
    resolved = db.list_deliveries(store, kind="resolved")[0]
    firing = db.list_deliveries(store, kind="firing")[0]
    assert resolved.parent_id == firing.id


def test_resolved_alert_fires_again_as_a_new_episode(store, clock):
    f = feed(store, clock)
    f.window(HIGH)
    f.window(LOW)
    t = f.window(HIGH)
    assert events(t) == [("drift", "resolved", "firing")]
    alert = db.get_alert(store, t[0].alert_id)
    assert alert is not None and alert.episode == 2 and alert.resolved_at is None
    ids = [d.id for d in db.list_deliveries(store)]
    assert kinds(store) == ["firing", "resolved", "firing"] and len(set(ids)) == 3


def test_replayed_window_changes_nothing(store, clock):
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, for_windows=2),))
    f.window(HIGH)
    f.n -= 1  # the same window again (a replay after a crash)
    assert f.window(HIGH) == []
    assert db.list_alerts(store)[0]["breaches"] == 1


def test_older_window_is_not_judged(store, clock):
    f = feed(store, clock)
    f.n = 5
    f.window(HIGH)
    f.n = 2
    assert f.window(LOW) == []
    assert state(store) == "firing"


def test_missing_or_nan_figure_is_neither_breach_nor_clear(store, clock):
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, for_windows=2),))
    f.window(HIGH)
    assert f.window({"other": 1.0}) == []
    assert f.window({"drift_share": float("nan")}) == []
    assert events(f.window(HIGH)) == [("drift", "pending", "firing")]


def test_an_infinite_figure_breaches_like_any_other(store, clock):
    """+inf is above every threshold (a Wasserstein distance of one 1e308 value): it was
    skipped as absent, so a drift_score rule stayed quiet on the worst drift there is."""
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3),))
    assert events(f.window({"drift_share": float("inf")})) == [("drift", "inactive", "firing")]
    assert events(f.window({"drift_share": float("-inf")})) == [("drift", "firing", "resolved")]
    row = db.list_alerts(store, model="churn")[0]
    assert row["value"] == float("-inf")


def test_alert_row_records_value_window_and_labels(store, clock):
    rule = Rule("drift", "drift_share", ">", 0.3, labels={"team": "ml"})
    f = feed(store, clock, (rule,))
    f.window(HIGH)
    row = db.list_alerts(store, state="firing", model="churn")[0]
    assert row["value"] == 0.6 and row["threshold"] == 0.3 and row["version"] == "v12"
    assert row["labels"] == {
        "alertname": "drift",
        "model": "churn",
        "metric": "drift_share",
        "severity": "warning",
        "team": "ml",
    }
    assert row["last_window_id"].startswith("churn|v12||2026-11-23T14:00:00.000Z|")
    assert row["window_start"] == "2026-11-23T14:00:00.000Z"


# -- when to notify ------------------------------------------------------------------


def test_reminder_after_repeat_interval_not_before(store, clock):
    f = feed(store, clock, repeat_interval=timedelta(hours=4))
    f.window(HIGH)
    fired = clock.now
    assert f.engine.on_tick(fired + timedelta(hours=3, minutes=59)) == []
    t = f.engine.on_tick(fired + timedelta(hours=4))
    assert [(x.event, x.notifiers) for x in t] == [("reminder", ("ops",))]
    assert kinds(store) == ["firing", "reminder"]
    # the next one is four hours after the reminder
    assert f.engine.on_tick(fired + timedelta(hours=7)) == []
    assert [x.event for x in f.engine.on_tick(fired + timedelta(hours=8))] == ["reminder"]
    reminder = db.list_deliveries(store, kind="reminder")[0]
    assert reminder.parent_id == db.list_deliveries(store, kind="firing")[0].id


def test_reminders_go_on_after_the_clock_went_a_year_ahead_and_back(store, clock):
    """A reminder sent while the wall clock was a year ahead is stamped a year ahead: once
    the clock is back, "4 hours since the last notification" would not come for a year."""
    f = feed(store, clock, repeat_interval=timedelta(hours=4))
    f.window(HIGH)
    fired = clock.now
    ahead = fired + timedelta(days=365)
    assert [x.event for x in f.engine.on_tick(ahead)] == ["reminder"]
    assert f.engine.on_tick(ahead + timedelta(hours=1)) == []
    # stepped back: the next tick reminds, and reminders go on every 4 hours from there
    assert [x.event for x in f.engine.on_tick(fired + timedelta(hours=1))] == ["reminder"]
    assert f.engine.on_tick(fired + timedelta(hours=4)) == []
    assert [x.event for x in f.engine.on_tick(fired + timedelta(hours=5))] == ["reminder"]
    assert kinds(store) == ["firing", "reminder", "reminder", "reminder"]


def test_a_clock_stepped_back_less_than_the_interval_delays_the_reminder_by_the_step(store, clock):
    f = feed(store, clock, repeat_interval=timedelta(hours=4))
    f.window(HIGH)
    back = clock.now - timedelta(hours=1)  # stepped back an hour just after firing
    assert f.engine.on_tick(back + timedelta(hours=4, minutes=59)) == []
    assert [x.event for x in f.engine.on_tick(back + timedelta(hours=5))] == ["reminder"]


def test_rule_repeat_interval_overrides_default(store, clock):
    rule = Rule("drift", "drift_share", ">", 0.3, repeat_interval=timedelta(minutes=30))
    f = feed(store, clock, (rule,))
    f.window(HIGH)
    assert [x.event for x in f.engine.on_tick(clock.now + timedelta(minutes=30))] == ["reminder"]


def test_no_reminder_after_resolution(store, clock):
    f = feed(store, clock)
    f.window(HIGH)
    f.window(LOW)
    assert f.engine.on_tick(clock.now + timedelta(days=1)) == []
    assert kinds(store) == ["firing", "resolved"]


def test_silenced_firing_is_not_notified_but_state_changes(store, clock):
    f = feed(store, clock)
    f.engine.silence(model="churn", until=clock.now + timedelta(hours=1), created_by="me")
    t = f.window(HIGH)
    assert events(t) == [("drift", "inactive", "firing")]
    assert t[0].muted == "silenced" and t[0].notifiers == ()
    assert kinds(store) == []


def test_still_firing_after_silence_ends_is_notified_on_tick(store, clock):
    f = feed(store, clock)
    until = clock.now + timedelta(hours=1)
    f.engine.silence(rule="drift", until=until)
    f.window(HIGH)
    assert f.engine.on_tick(until - timedelta(seconds=1)) == []
    t = f.engine.on_tick(until)
    assert [(x.event, x.notifiers) for x in t] == [("notify", ("ops",))]
    assert kinds(store) == ["firing"]
    assert f.engine.on_tick(until + timedelta(minutes=1)) == []  # once


def test_resolution_of_silenced_alert_is_not_sent(store, clock):
    f = feed(store, clock)
    f.window(HIGH)
    f.engine.silence(model="churn", until=clock.now + timedelta(hours=1))
    t = f.window(LOW)
    assert events(t) == [("drift", "firing", "resolved")]
    assert t[0].muted == "silenced"
    assert kinds(store) == ["firing"]


def test_resolution_of_never_notified_alert_is_not_sent(store, clock):
    f = feed(store, clock)
    f.engine.silence(until=clock.now + timedelta(minutes=20))
    f.window(HIGH)  # fires silenced
    clock.advance(minutes=30)  # silence over, but no tick ran
    f.n += 2
    t = f.window(LOW)
    assert events(t) == [("drift", "firing", "resolved")] and t[0].notifiers == ()
    assert kinds(store) == []


def test_silence_of_another_model_or_rule_does_not_mute(store, clock):
    f = feed(store, clock, (DRIFT, Rule("other", "x", ">", 1)))
    f.engine.silence(model="fraud", until=clock.now + timedelta(hours=1))
    f.engine.silence(model="churn", rule="other", until=clock.now + timedelta(hours=1))
    assert f.window(HIGH)[0].notifiers == ("ops",)


def test_expired_silence_does_not_mute(store, clock):
    f = feed(store, clock)
    sid = f.engine.silence(until=clock.now + timedelta(hours=1))
    assert [s.id for s in f.engine.list_silences()] == [sid]
    assert f.engine.expire_silence(sid) is True
    assert f.engine.list_silences() == [] and len(f.engine.list_silences(active_only=False)) == 1
    assert f.window(HIGH)[0].notifiers == ("ops",)


def test_silence_validation(store, clock):
    f = feed(store, clock)
    with pytest.raises(ValueError, match="end after it starts"):
        f.engine.silence(until=clock.now)
    with pytest.raises(ValueError, match="unknown rule"):
        f.engine.silence(rule="nope", until=clock.now + timedelta(hours=1))
    with pytest.raises(ValueError, match="needs an end"):
        f.engine.silence(model="churn")


def test_critical_twin_inhibits_warning_notification(store, clock):
    warn = Rule("drift-warn", "drift_share", ">", 0.3)
    crit = Rule("drift-crit", "drift_share", ">", 0.5, severity="critical")
    f = feed(store, clock, (warn, crit))
    t = {x.rule: x for x in f.window(HIGH)}
    assert t["drift-warn"].to_state == "firing" and t["drift-warn"].muted == "inhibited"
    assert t["drift-crit"].notifiers == ("ops",)
    [d] = db.list_deliveries(store)
    assert [a["rule"] for a in d.payload["alerts"]] == ["drift-crit"]


def test_warning_notified_once_its_critical_twin_resolves(store, clock):
    warn = Rule("drift-warn", "drift_share", ">", 0.3)
    crit = Rule("drift-crit", "drift_share", ">", 0.5, severity="critical")
    f = feed(store, clock, (warn, crit))
    f.window(HIGH)
    t = f.window({"drift_share": 0.4})  # critical clears, warning still breaching
    assert events(t) == [("drift-crit", "firing", "resolved")]
    t = f.engine.on_tick(clock.now)
    assert [(x.rule, x.event) for x in t] == [("drift-warn", "notify")]


def test_warning_of_another_column_is_not_inhibited(store, clock):
    warn = Rule("col-warn", "wasserstein", ">", 0.1, column="age")
    crit = Rule("col-crit", "wasserstein", ">", 0.2, column="plan", severity="critical")
    f = feed(store, clock, (warn, crit))
    t = {x.rule: x for x in f.window(columns={"age": (0.3, True), "plan": (0.3, True)})}
    assert t["col-warn"].muted == "" and t["col-warn"].notifiers == ("ops",)


def test_alerts_changing_together_are_grouped_into_one_message(store, clock):
    rule = Rule("col-drift", "drifted", "==", 1, column="*")
    f = feed(store, clock, (rule,))
    t = f.window(columns={"age": (0.3, True), "plan": (0.4, True), "tenure": (0.0, False)})
    assert sorted(x.labels["column"] for x in t) == ["age", "plan"]
    [d] = db.list_deliveries(store)
    assert sorted(d.alert_ids) == sorted(x.alert_id for x in t)
    assert d.payload["group"] == {"model": "churn", "alertname": "col-drift"}
    assert [a["column"] for a in d.payload["alerts"]] == ["age", "plan"]


def test_different_group_labels_go_out_separately(store, clock):
    rules = (DRIFT, Rule("rows", "row_count", "<", 100))
    f = feed(store, clock, rules)
    f.window({"drift_share": 0.6, "row_count": 10})
    groups = sorted(d.payload["group"]["alertname"] for d in db.list_deliveries(store))
    assert groups == ["drift", "rows"]
    # grouped by model only: one message
    store2_rules = (Rule("drift2", "drift_share", ">", 0.3), Rule("rows2", "row_count", "<", 100))
    g = feed(store, clock, store2_rules, group_by=("model",))
    g.model = "fraud"
    g.window({"drift_share": 0.6, "row_count": 10})
    [d] = db.list_deliveries(store, alert_id=store2_rules[0].instance_id("fraud", "", "", "v12"))
    assert len(d.alert_ids) == 2


def test_resolutions_are_grouped_per_firing_message(store, clock):
    rule = Rule("col-drift", "drifted", "==", 1, column="*")
    f = feed(store, clock, (rule,))
    f.window(columns={"age": (0.3, True), "plan": (0.4, True)})
    f.window(columns={"age": (0.0, False), "plan": (0.4, True)})
    f.window(columns={"age": (0.0, False), "plan": (0.0, False)})
    [firing] = db.list_deliveries(store, kind="firing")
    resolved = db.list_deliveries(store, kind="resolved")
    assert [len(d.alert_ids) for d in resolved] == [1, 1]
    assert {d.parent_id for d in resolved} == {firing.id}


def test_rule_notifiers_route_and_default_goes_to_alert_notifiers(store, clock):
    specs = {
        "slack": NotifierSpec(),
        "pager": NotifierSpec(),
        "retrain": NotifierSpec("retrain", timedelta(hours=1)),
    }
    rules = (DRIFT, Rule("rows", "row_count", "<", 100, notifiers=("pager",)))
    f = feed(store, clock, rules, specs)
    t = {x.rule: x for x in f.window({"drift_share": 0.6, "row_count": 10})}
    assert t["drift"].notifiers == ("slack", "pager")  # not the retraining hook
    assert t["rows"].notifiers == ("pager",)


def test_unknown_notifier_or_duplicate_rule_is_rejected(store, clock):
    with pytest.raises(ValueError, match="notifier 'nope' is not configured"):
        make_engine(store, clock, (Rule("r", "m", ">", 1, notifiers=("nope",)),))
    with pytest.raises(ValueError, match="duplicate rule names: r"):
        make_engine(store, clock, (Rule("r", "m", ">", 1), Rule("r", "n", ">", 1)))


def test_retraining_requested_on_firing_only(store, clock):
    specs = {"retrain": NotifierSpec("retrain", None)}
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, notifiers=("retrain",)),), specs)
    f.window(HIGH)
    f.window(LOW)
    f.engine.on_tick(clock.now + timedelta(days=1))
    assert kinds(store) == ["retrain"]


def test_rule_removed_from_config_ends_its_alert_quietly(store, clock):
    f = feed(store, clock)
    f.window(HIGH)
    g = feed(store, clock, (Rule("other", "x", ">", 1),))
    t = g.engine.on_tick(clock.now)
    assert [(x.rule, x.to_state) for x in t] == [("drift", "resolved")]
    assert kinds(store) == ["firing"]


@pytest.mark.parametrize("narrowed", [
    Rule("drift", "drift_share", ">", 0.3, model="fraud"),  # another model
    Rule("drift", "drift_share", ">", 0.3, column="*"),  # per column: the dataset row is not judged
    Rule("drift", "drift_share", ">", 0.3, segment="*"),  # segments only
    Rule("drift", "drift_share", ">", 0.3, version="v13"),  # another version
    Rule("drift", "drift_share", ">", 0.3, version="*"),  # per version: the instance's id changed
    Rule("drift", "missing_share", ">", 0.3),  # another figure
], ids=["model", "column", "segment", "version", "per-version", "metric"])
def test_rule_narrowed_by_a_reload_ends_the_alerts_it_no_longer_judges(store, clock, narrowed):
    """A reload (or restart) that keeps a rule's name but no longer covers a firing
    instance (another model, column, segment, version or figure): no window judges that
    instance again, so it resolved never and sent a reminder every repeat_interval for
    good. It ends quietly, as a rule that left the config does."""
    f = feed(store, clock)
    f.window(HIGH)
    g = feed(store, clock, (narrowed,))
    t = g.engine.on_tick(clock.now + timedelta(days=1))
    assert [(x.rule, x.to_state) for x in t] == [("drift", "resolved")]
    assert kinds(store) == ["firing"]
    assert g.engine.on_tick(clock.now + timedelta(days=2)) == []
    assert kinds(store) == ["firing"]


def test_rule_narrowed_on_every_instance_of_a_shared_store_ends_the_alerts_it_no_longer_judges(store, clock):
    """On a shared store a re-scoped rule's old alerts are left alone while another live
    instance still has the rule with its old settings (a rolling change), and end once every
    instance announces the same settings (before, the name alone kept them firing for good)."""
    from storage.instances import announce

    f = feed(store, clock)
    f.window(HIGH)
    g = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, model="fraud"),))
    g.engine.owner, g.engine.rule_digests = "host-b:2:bb", {"drift": "new"}
    announce(store, "host-a:1:aa", {"rules": {"drift": "old"}, "notifiers": ["ops"], "models": {}}, clock.now)
    t = g.engine.on_tick(clock.now)
    if store.shared:
        assert t == [] and [a.state for a in db.active_alerts(store)] == ["firing"]
        announce(store, "host-a:1:aa", {"rules": {"drift": "new"}, "notifiers": ["ops"], "models": {}}, clock.now)
        t = g.engine.on_tick(clock.now)
    assert [(x.rule, x.to_state) for x in t] == [("drift", "resolved")]
    assert kinds(store) == ["firing"]


def test_rule_judging_another_figure_after_a_reload_keeps_the_alert_its_windows_judge(store, clock):
    """A rule whose figure changed judges its instance again at the next window: the alert
    shows the new figure from then on, and a tick does not end it as one it no longer covers."""
    f = feed(store, clock)
    f.window(HIGH)
    g = feed(store, clock, (Rule("drift", "missing_share", ">", 0.3),))
    g.n = f.n
    assert g.window({"missing_share": 0.5}) == []  # still breaching: firing goes on
    alert = db.get_alert(store, DRIFT.instance_id("churn", "", "", "v12"))
    assert alert is not None and (alert.state, alert.metric, alert.value) == ("firing", "missing_share", 0.5)
    assert [x.event for x in g.engine.on_tick(clock.now + timedelta(days=1))] == ["reminder"]


def test_rule_changed_within_its_scope_keeps_its_alert_firing(store, clock):
    """A new threshold, op or for/resolve count leaves a firing instance to the next window."""
    f = feed(store, clock)
    f.window(HIGH)
    g = feed(store, clock, (Rule("drift", "drift_share", ">", 0.5, model="churn", resolve_after=2),))
    assert [x.event for x in g.engine.on_tick(clock.now + timedelta(days=1))] == ["reminder"]
    assert state(store) == "firing"


def test_a_rule_another_live_instance_has_is_left_to_it(store, clock):
    """On a shared store, an instance whose config lacks a rule (a rolling change of the
    config) leaves that rule's alerts alone while an instance that has it is alive (it
    used to resolve them at its next tick, every time they fired); once that instance
    is gone (its row older than LIVE_FOR), the rule has left the config for good."""
    from storage.instances import LIVE_FOR, announce
    from tests.store_targets import age_instance

    f = feed(store, clock)
    f.window(HIGH)
    announce(store, "host-a:1:aa", {"rules": {"drift": "d1"}, "notifiers": ["ops"], "models": {}}, clock.now)
    g = feed(store, clock, (Rule("other", "x", ">", 1),))
    g.engine.owner = "host-b:2:bb"
    t = g.engine.on_tick(clock.now)
    if not store.shared:  # SQLite: one instance per file, no one else to leave it to
        assert [(x.rule, x.to_state) for x in t] == [("drift", "resolved")]
        return
    assert t == [] and [a.state for a in db.active_alerts(store)] == ["firing"]
    # this instance's own row does not count as another instance having the rule
    announce(store, "host-b:2:bb", {"rules": {"drift": "d1"}}, clock.now)
    age_instance(store, "host-a:1:aa", LIVE_FOR + timedelta(seconds=1), clock.now)  # host-a is gone
    t = g.engine.on_tick(clock.now)
    assert [(x.rule, x.to_state) for x in t] == [("drift", "resolved")]
    assert kinds(store) == ["firing"]


# -- no data -----------------------------------------------------------------------------


NO_DATA = Rule(
    "silent", "no_data", severity="critical", model="churn", no_data_for=timedelta(minutes=30)
)


def test_no_data_fires_after_the_duration_and_resolves_on_activity(store, clock):
    f = feed(store, clock, (NO_DATA,))
    start = clock.now
    f.engine.observe_model_activity("churn", start)
    assert f.engine.on_tick(start + timedelta(minutes=29)) == []
    t = f.engine.on_tick(start + timedelta(minutes=30))
    assert [(x.to_state, x.notifiers, x.value) for x in t] == [("firing", ("ops",), 1800.0)]
    f.engine.observe_model_activity("churn", start + timedelta(minutes=40))
    t = f.engine.on_tick(start + timedelta(minutes=41))
    assert [(x.to_state, x.notifiers) for x in t] == [("resolved", ("ops",))]
    assert kinds(store) == ["firing", "resolved"]


def test_no_data_counts_from_start_after_a_restart(store, clock):
    f = feed(store, clock, (NO_DATA,))
    # no activity observed since this engine started: silent for 30 min from now
    assert f.engine.on_tick(clock.now + timedelta(minutes=29)) == []
    assert [x.to_state for x in f.engine.on_tick(clock.now + timedelta(minutes=30))] == ["firing"]


def test_no_data_clocks_go_on_across_a_reload(store, clock):
    """A reload builds a new engine, which seeds every model "active now": copying the old
    clocks kept only newer values, so each SIGHUP restarted them (with reloads more often
    than no_data_for, the alert never fired)."""
    old = feed(store, clock, (NO_DATA,))
    start = clock.now
    old.engine.observe_model_activity("churn", start)
    clock.now = start + timedelta(minutes=20)
    new = make_engine(store, clock, (NO_DATA,))  # the reload's engine, made 20 minutes later
    new.continue_activity(old.engine)
    t = new.on_tick(start + timedelta(minutes=30))
    assert [(x.to_state, x.value) for x in t] == [("firing", 1800.0)]


def test_no_data_fires_after_the_clock_went_a_year_ahead_and_back(store, clock):
    """Windows seen while the wall clock was a year ahead are stamped (and stored) a year
    ahead; once it is back, the model's silence must count from the step, not wait a year."""
    rule = Rule("silent", "no_data", model="churn", no_data_for=timedelta(minutes=30))
    f = feed(store, clock, (rule,))
    start = clock.now
    clock.now = start + timedelta(days=365)
    f.engine.observe_model_activity("churn", clock.now)
    f.start = clock.now
    f.window(LOW)  # stored with computed_at a year ahead
    back = start + timedelta(minutes=5)  # the clock is stepped back; the stream stops
    assert f.engine.on_tick(back) == []
    assert f.engine.on_tick(back + timedelta(minutes=29)) == []
    t = f.engine.on_tick(back + timedelta(minutes=30))
    assert [(x.model, x.to_state) for x in t] == [("churn", "firing")]


def test_no_data_for_any_model_covers_models_seen(store, clock):
    rule = Rule("silent", "no_data", no_data_for=timedelta(minutes=30))
    f = feed(store, clock, (rule,))
    f.window(LOW)  # churn seen
    t = f.engine.on_tick(clock.now + timedelta(hours=1))
    assert [(x.model, x.to_state) for x in t] == [("churn", "firing")]


def test_firing_no_data_alert_survives_a_restart(store, clock):
    f = feed(store, clock, (NO_DATA,))
    start = clock.now
    f.engine.observe_model_activity("churn", start)
    f.engine.on_tick(start + timedelta(minutes=30))
    clock.set(start + timedelta(minutes=35))
    g = feed(store, clock, (NO_DATA,))  # restart: still no data
    assert g.engine.on_tick(start + timedelta(minutes=36)) == []
    assert state(store, NO_DATA, version="") == "firing"
    g.engine.observe_model_activity("churn", start + timedelta(minutes=40))
    assert [x.to_state for x in g.engine.on_tick(start + timedelta(minutes=41))] == ["resolved"]


def test_no_data_any_model_knows_models_from_the_store_after_restart(store, clock):
    from storage.records import WindowKey, WindowRecord
    from storage.windows import write_window

    key = WindowKey("fraud", "v1", "", "2026-11-23T13:00:00.000Z", "2026-11-23T13:15:00.000Z")
    with store.transaction():
        write_window(store, WindowRecord(key, 10, "ok", clock.now), [])
    f = feed(store, clock, (Rule("silent", "no_data", no_data_for=timedelta(minutes=30)),))
    t = f.engine.on_tick(clock.now + timedelta(minutes=30))
    assert [(x.model, x.to_state) for x in t] == [("fraud", "firing")]



def test_a_model_removed_from_the_config_is_not_watched_and_its_alerts_end(store, clock):
    """A model left the config (restart or reload): a no-data rule without ``model`` took it
    from the store's windows and fired on it for good (it never sends rows again), and an
    alert a rule for any model had fired on it was never judged again: reminders every
    ``repeat_interval`` for a model nobody monitors. Its alerts now end quietly."""
    any_model = Rule("drift", "drift_share", ">", 0.3)
    silent = Rule("silent", "no_data", no_data_for=timedelta(minutes=30))
    f = feed(store, clock, (any_model, silent))
    f.model = "fraud"
    f.window(HIGH)  # fraud's drift alert fires
    assert state(store, any_model, model="fraud") == "firing"
    g = feed(store, clock, (any_model, silent), models=frozenset({"churn"}))  # restart without fraud
    t = g.engine.on_tick(clock.now + timedelta(hours=5))
    assert [(x.rule, x.model, x.to_state) for x in t] == [("drift", "fraud", "resolved")]
    assert state(store, silent, model="fraud", version="") == "inactive"  # never watched
    assert kinds(store) == ["firing"]  # ended quietly: no resolved message, no reminder
    assert g.engine.on_tick(clock.now + timedelta(days=1)) == []
    # a config that still has it: as before
    h = feed(store, clock, (silent,), models=frozenset({"churn", "fraud"}))
    t = h.engine.on_tick(clock.now + timedelta(days=2))
    assert [(x.rule, x.model, x.to_state) for x in t] == [("silent", "fraud", "firing")]

def test_clear_instances_get_no_row(store, clock):
    f = feed(store, clock, (Rule("col-drift", "drifted", "==", 1, column="*"),))
    assert f.window(columns={"age": (0.0, False), "plan": (0.0, False)}) == []
    assert db.list_alerts(store, include_inactive=True) == []


def test_two_versions_of_the_same_time_range_count_once(store, clock):
    f = feed(store, clock, (Rule("drift", "drift_share", ">", 0.3, for_windows=2),))
    f.window(HIGH, version="v12", advance=False)
    assert f.window(HIGH, version="v13") == []  # same range, other version: not judged again
    assert db.list_alerts(store)[0]["breaches"] == 1
    assert events(f.window(HIGH, version="v13")) == [("drift", "pending", "firing")]
    assert db.list_alerts(store)[0]["version"] == "v13"
