"""A rule without ``version`` over several versions of a model (a baseline and a canary):
one instance judges time slots, a slot breaches when any version's window in it does."""

from __future__ import annotations

from datetime import timedelta

from alerts.rules import DetectorSpec, Rule
from storage import alerts as db
from storage.records import MetricRow, WindowKey, WindowRecord, iso
from tests.alerts.conftest import T0, Feed, events, make_engine

HIGH, LOW = {"drift_share": 0.6}, {"drift_share": 0.1}
BASE, CANARY = "v12", "v13"


def feed(store, clock, rule: Rule) -> Feed:
    return Feed(make_engine(store, clock, [rule]), store, clock)


def slot(f: Feed, first: tuple[str, dict[str, float]], second: tuple[str, dict[str, float]]):
    """One time slot: two versions' windows ending at the same time, in the given order;
    the transitions of both."""
    out = f.window(first[1], version=first[0], advance=False)
    return out + f.window(second[1], version=second[0])


def alert(store, rule: Rule):
    return db.get_alert(store, rule.instance_id("churn", "", "", ""))


def test_a_canary_breach_fires_when_the_baseline_of_its_slot_is_clear(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3)
    f = feed(store, clock, rule)
    assert events(slot(f, (BASE, LOW), (CANARY, HIGH))) == [("drift", "inactive", "firing")]
    assert events(slot(f, (BASE, LOW), (CANARY, LOW))) == [("drift", "firing", "resolved")]
    # the instance has a row now: the baseline's clear window judges the slot first
    assert events(slot(f, (BASE, LOW), (CANARY, HIGH))) == [("drift", "resolved", "firing")]
    a = alert(store, rule)
    assert (a.version, a.value, a.episode) == (CANARY, 0.6, 2)
    delivery = db.list_deliveries(store)[-1]
    assert delivery.kind == "firing" and delivery.payload["alerts"][0]["version"] == CANARY


def test_for_windows_counts_slots_while_the_baseline_stays_clear(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3, for_windows=2)
    f = feed(store, clock, rule)
    assert events(slot(f, (BASE, LOW), (CANARY, HIGH))) == [("drift", "inactive", "pending")]
    # the baseline's clear window, judged first, must not end the canary's pending run
    assert events(slot(f, (BASE, LOW), (CANARY, HIGH))) == [("drift", "pending", "firing")]
    a = alert(store, rule)
    assert (a.state, a.breaches, a.version) == ("firing", 2, CANARY)


def test_for_windows_counts_slots_whichever_version_closes_first(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3, for_windows=2)
    f = feed(store, clock, rule)
    assert events(slot(f, (CANARY, HIGH), (BASE, LOW))) == [("drift", "inactive", "pending")]
    assert events(slot(f, (CANARY, HIGH), (BASE, LOW))) == [("drift", "pending", "firing")]


def test_two_breaching_versions_count_once(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3, for_windows=3)
    f = feed(store, clock, rule)
    slot(f, (BASE, HIGH), (CANARY, HIGH))
    assert alert(store, rule).breaches == 1
    slot(f, (BASE, HIGH), (CANARY, HIGH))
    assert (alert(store, rule).state, alert(store, rule).breaches) == ("pending", 2)


def test_resolving_needs_a_slot_clear_for_every_version(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3)
    f = feed(store, clock, rule)
    assert events(slot(f, (BASE, HIGH), (CANARY, HIGH))) == [("drift", "inactive", "firing")]
    # the baseline turns clear first: the canary still breaches, nothing resolves
    assert slot(f, (BASE, LOW), (CANARY, HIGH)) == []
    assert slot(f, (CANARY, HIGH), (BASE, LOW)) == []
    assert [d.kind for d in db.list_deliveries(store)] == ["firing"]
    assert alert(store, rule).version == CANARY
    assert events(slot(f, (BASE, LOW), (CANARY, LOW))) == [("drift", "firing", "resolved")]
    assert [d.kind for d in db.list_deliveries(store)] == ["firing", "resolved"]


def test_resolve_after_counts_clear_slots_not_clear_windows(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3, resolve_after=2)
    f = feed(store, clock, rule)
    slot(f, (BASE, HIGH), (CANARY, HIGH))
    assert slot(f, (BASE, LOW), (CANARY, LOW)) == []  # one clear slot of two
    assert alert(store, rule).clears == 1
    assert events(slot(f, (BASE, LOW), (CANARY, LOW))) == [("drift", "firing", "resolved")]


def test_a_version_that_stops_delays_a_clear_slot_by_one_slot(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3)
    f = feed(store, clock, rule)
    slot(f, (BASE, LOW), (CANARY, HIGH))
    # the canary is rolled back: its windows stop; the baseline's clear slot waits for it
    assert f.window(LOW, version=BASE) == []
    assert alert(store, rule).state == "firing"
    # the next slot's window judges the waiting slot (clear) first, then its own
    assert events(f.window(LOW, version=BASE)) == [("drift", "firing", "resolved")]
    assert f.window(LOW, version=BASE) == []  # one version now: judged at once


def test_a_held_clear_slot_then_a_breach_notifies_both(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3)
    f = feed(store, clock, rule)
    slot(f, (BASE, LOW), (CANARY, HIGH))
    assert f.window(LOW, version=BASE) == []  # held: the canary has not reported
    got = f.window(HIGH, version=BASE)
    assert events(got) == [("drift", "firing", "resolved"), ("drift", "resolved", "firing")]
    assert [d.kind for d in db.list_deliveries(store)] == ["firing", "resolved", "firing"]
    assert alert(store, rule).episode == 2


def test_named_and_per_version_rules_are_unchanged(store, clock) -> None:
    canary_only = Rule("canary", "drift_share", ">", 0.3, version=CANARY, for_windows=2)
    each = Rule("each", "drift_share", ">", 0.3, version="*", for_windows=2)
    f = Feed(make_engine(store, clock, [canary_only, each]), store, clock)
    assert sorted(events(slot(f, (BASE, HIGH), (CANARY, HIGH)))) == [
        ("canary", "inactive", "pending"), ("each", "inactive", "pending"), ("each", "inactive", "pending"),
    ]
    got = events(slot(f, (BASE, LOW), (CANARY, HIGH)))
    assert sorted(got) == [("canary", "pending", "firing"), ("each", "pending", "firing"), ("each", "pending", "inactive")]


def test_a_restarted_engine_takes_a_late_breach_of_a_slot_judged_clear(store, clock) -> None:
    rule = Rule("drift", "drift_share", ">", 0.3, for_windows=2)
    f = feed(store, clock, rule)
    slot(f, (BASE, LOW), (CANARY, HIGH))  # pending
    assert events(f.window(LOW, version=BASE, advance=False)) == []  # held: pending stays
    # a restart loses what the slot saw; the held clear was never stepped
    g = Feed(make_engine(store, clock, [rule]), store, clock, n=f.n)
    assert events(g.window(HIGH, version=CANARY)) == [("drift", "pending", "firing")]
    # a late clear window of that breaching slot changes nothing
    g.n -= 1
    assert g.window(LOW, version=BASE) == []
    # without memory a late breach of a slot judged clear counts as one breaching slot
    h = Feed(make_engine(store, clock, [rule]), store, clock, n=g.n)
    h.window(LOW, version=BASE, advance=False)
    h.window(LOW, version=BASE)
    assert alert(store, rule).state == "resolved"
    k = Feed(make_engine(store, clock, [rule]), store, clock, n=h.n - 1)
    assert events(k.window(HIGH, version=CANARY)) == [("drift", "resolved", "pending")]


# -- performance windows re-judged when labels mature -------------------------------------


ACC = Rule("accuracy-low", "accuracy", "<", 0.8)


def perf(version: str, i: int) -> WindowRecord:
    s, e = T0 + timedelta(minutes=15 * i), T0 + timedelta(minutes=15 * (i + 1))
    return WindowRecord(WindowKey("churn", version, "", iso(s), iso(e)), 500, "ok", e)


def judge(engine, store, rec: WindowRecord, accuracy: float):
    with store.transaction():
        return engine.on_window(rec, [MetricRow("", "accuracy", accuracy)], reevaluate=True)


def test_a_recomputed_baseline_window_does_not_clear_the_canarys_breach(store, clock) -> None:
    engine = make_engine(store, clock, [ACC])
    assert judge(engine, store, perf(BASE, 0), 0.9) == []
    assert events(judge(engine, store, perf(CANARY, 0), 0.6)) == [("accuracy-low", "inactive", "firing")]
    assert judge(engine, store, perf(BASE, 0), 0.7) == []  # the slot breached already
    assert judge(engine, store, perf(BASE, 0), 0.95) == []  # the canary still breaches
    a = alert(store, ACC)
    assert (a.state, a.version) == ("firing", CANARY)
    # the canary's recomputed window turns clear too: the slot is clear
    assert events(judge(engine, store, perf(CANARY, 0), 0.9)) == [("accuracy-low", "firing", "resolved")]


def test_performance_windows_judged_one_by_one_count_slots(store, clock) -> None:
    engine = make_engine(store, clock, [Rule("acc2", "accuracy", "<", 0.8, for_windows=2)])
    for i in range(2):  # the baseline's window of each slot is computed and judged first
        judge(engine, store, perf(BASE, i), 0.9)
        got = judge(engine, store, perf(CANARY, i), 0.6)
    assert events(got) == [("acc2", "pending", "firing")]


# -- change detectors ---------------------------------------------------------------------


def test_a_detector_rule_runs_one_detector_per_version(store, clock) -> None:
    cusum = DetectorSpec("cusum", (("k", 0.5), ("h", 5.0), ("min_instances", 5)))
    rule = Rule("slow", "drift_share", ">", detector=cusum)
    f = feed(store, clock, rule)
    fired = []
    # the versions sit at different levels, each steady: no change in either series
    for i in range(30):
        got = slot(f, (BASE, {"drift_share": 0.05 + 0.001 * (i % 3)}), (CANARY, {"drift_share": 0.3 + 0.001 * (i % 2)}))
        fired += [i for t in got if t.to_state == "firing"]
    assert fired == []
    keys = sorted(r["alert_id"] for r in store.query("SELECT alert_id FROM rule_detectors"))
    aid = rule.instance_id("churn", "", "", "")
    assert keys == [f"{aid}@{BASE}", f"{aid}@{CANARY}"]
    # the canary's figure jumps: its own detector signals, the baseline's stays quiet
    for i in range(6):
        got = slot(f, (BASE, {"drift_share": 0.05}), (CANARY, {"drift_share": 0.6}))
        fired += [i for t in got if t.to_state == "firing"]
    assert fired and alert(store, rule).version == CANARY


def test_the_last_clear_slot_counts_when_a_version_stopped_with_it(store, clock) -> None:
    """The canary is rolled back in the slot the baseline turns clear, and the model then
    goes quiet (retired, or idle): the clear slot must count, as it did before slots were
    judged; held for the canary that never comes, the alert would stay firing for good."""
    rule = Rule("drift", "drift_share", ">", 0.3)
    f = feed(store, clock, rule)
    assert events(slot(f, (BASE, HIGH), (CANARY, HIGH))) == [("drift", "inactive", "firing")]
    # the end of the flush (the pipeline calls finish_slots): the canary is not coming
    assert events(f.window(LOW, version=BASE) + f.engine.finish_slots()) == [("drift", "firing", "resolved")]
    assert [d.kind for d in db.list_deliveries(store)] == ["firing", "resolved"]
    assert f.engine.finish_slots() == []  # judged once


def test_a_restart_does_not_lose_a_clear_slot(store, clock) -> None:
    """Crash equivalence: a clear slot of the baseline alone (the canary stopped), then a
    restart, then one more clear slot resolves (resolve_after=2) as without the restart."""
    rule = Rule("drift", "drift_share", ">", 0.3, resolve_after=2)
    f = feed(store, clock, rule)
    assert events(slot(f, (BASE, HIGH), (CANARY, HIGH))) == [("drift", "inactive", "firing")]
    f.window(LOW, version=BASE)
    f.engine.finish_slots()  # the end of the flush, which commits
    f.engine = make_engine(store, clock, [rule])  # the restart: a new engine on the same store
    assert events(f.window(LOW, version=BASE) + f.engine.finish_slots()) == [("drift", "firing", "resolved")]


def test_a_slot_completed_in_its_flush_is_not_judged_again_at_its_end(store, clock) -> None:
    """Both versions clear in one flush: the slot counts once, finish_slots adds nothing."""
    rule = Rule("drift", "drift_share", ">", 0.3, resolve_after=2)
    f = feed(store, clock, rule)
    slot(f, (BASE, HIGH), (CANARY, HIGH))
    f.engine.finish_slots()
    assert slot(f, (BASE, LOW), (CANARY, LOW)) + f.engine.finish_slots() == []
    assert (alert(store, rule).state, alert(store, rule).clears) == ("firing", 1)
