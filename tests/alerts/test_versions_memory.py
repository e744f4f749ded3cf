"""What an engine remembers of its rules' time slots (rules without ``version``, see
tests/alerts/test_versions.py) against rolled-back flushes, config reloads and versions
new to a model: the memory must never judge a slot from windows that were not stored,
nor outlive the rules and models it is about."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from alerts.rules import DetectorSpec, Rule, detector_step
from monitor.config import load_config
from monitor.service.alerting import Alerting
from monitor.windows.figures import WindowFigures
from storage import alerts as db
from storage.detectors import save_detector
from storage.records import MetricRow, WindowKey, WindowRecord, iso
from tests.alerts.conftest import T0, Feed, events, make_engine

HIGH, LOW = {"drift_share": 0.6}, {"drift_share": 0.1}
BASE, CANARY = "v12", "v13"
MODELS = "".join(
    f'[[models]]\nname = "{m}"\nreference = "ref.csv"\nfeatures.numerical = ["age"]\n'
    for m in ("churn", "fraud")
)
DRIFT = '[[rules]]\nname = "drift"\nmetric = "drift_share"\nop = ">"\nthreshold = 0.3\nresolve_after = 2\n'


class Boom(Exception):
    """A store error after the windows were judged: the flush rolls back."""


def _alerting(folder: Path, store, clock, rules: str = DRIFT) -> Alerting:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ref.csv").write_text("age\n1\n2\n")
    (folder / "config.toml").write_text(MODELS + rules)
    return Alerting(load_config(folder / "config.toml"), store, clock=clock)


def _flush(alerting: Alerting, store, *windows: tuple[Feed, str, dict[str, float], bool], fail: bool = False):
    """One flush as the pipeline makes it: windows, then ``finish_slots``, in one transaction
    (rolled back with ``fail``), then its outcome. Returns the transitions it made."""
    made: list = []
    try:
        with store.transaction():
            for f, version, values, advance in windows:
                made += f.window(values, version=version, advance=advance)
            if fail:
                raise Boom
            made += alerting.engine.finish_slots()
    except Boom:
        alerting.flush_outcome(False)
        return []
    alerting.flush_outcome(True)
    return made


def _alert(store, model: str = "churn"):
    return db.get_alert(store, Rule("drift", "drift_share", ">", 0.3).instance_id(model, "", "", ""))


def test_a_held_slot_of_a_rolled_back_flush_is_not_judged_by_another_flush(tmp_path, store, clock) -> None:
    """The baseline's clear window is held for the canary; the flush rolls back (its windows
    were not stored) and its partition goes to another instance. The next flush, of another
    model, must not judge that slot from memory: a clear counted on windows never stored,
    under a lock on a model the flush did not take at its start (two instances could wait
    for each other's model locks in a circle)."""
    alerting = _alerting(tmp_path, store, clock)
    churn = Feed(alerting.engine, store, clock)
    fraud = Feed(alerting.engine, store, clock, model="fraud")
    made = _flush(alerting, store, (churn, BASE, HIGH, False), (churn, CANARY, HIGH, True))
    assert events(made) == [("drift", "inactive", "firing")]
    _flush(alerting, store, (churn, BASE, LOW, True), fail=True)
    assert _flush(alerting, store, (fraud, BASE, LOW, True)) == []
    a = _alert(store)
    assert (a.state, a.clears) == ("firing", 0)


def test_a_retried_flush_judges_its_slot_once(tmp_path, store, clock) -> None:
    """The same flush rolled back, then written again: its slot counts once toward
    ``resolve_after``, and still waits for the canary of the slot before it."""
    alerting = _alerting(tmp_path, store, clock)
    churn = Feed(alerting.engine, store, clock)
    _flush(alerting, store, (churn, BASE, HIGH, False), (churn, CANARY, HIGH, True))
    _flush(alerting, store, (churn, BASE, LOW, False), (churn, CANARY, LOW, False), fail=True)
    assert _flush(alerting, store, (churn, BASE, LOW, False), (churn, CANARY, HIGH, True)) == []
    a = _alert(store)
    assert (a.state, a.clears, a.version) == ("firing", 0, CANARY)
    _flush(alerting, store, (churn, BASE, LOW, False), (churn, CANARY, LOW, True))
    assert (_alert(store).state, _alert(store).clears) == ("firing", 1)
    made = _flush(alerting, store, (churn, BASE, LOW, False), (churn, CANARY, LOW, True))
    assert events(made) == [("drift", "firing", "resolved")]


def test_a_reload_keeps_the_slot_memory_of_kept_rules_and_models_only(store, clock) -> None:
    """A reload's engine takes over what the old one saw of its slots, except for rules
    removed or changed and models removed: before, it took every entry, so the memory grew
    with each reload that renamed a rule or dropped a model."""
    drift = Rule("drift", "drift_share", ">", 0.3)
    rows = Rule("rows", "drift_share", ">", 0.5)
    old = make_engine(store, clock, [drift, rows])
    churn, fraud = Feed(old, store, clock), Feed(old, store, clock, model="fraud")
    for f in (churn, fraud):
        f.window(HIGH, version=BASE, advance=False)
        f.window(LOW, version=CANARY)
    new = make_engine(store, clock, [drift, Rule("rows", "drift_share", ">", 0.7)])
    new.continue_activity(old, {"churn"})
    assert sorted(new._slots) == [drift.instance_id("churn", "", "", "")]
    # what it kept still counts: the slot's canary is expected in the next one
    g = Feed(new, store, clock, n=churn.n)
    assert [t for t in g.window(LOW, version=BASE) if t.rule == "drift"] == []
    assert new._slots[drift.instance_id("churn", "", "", "")].applied is None


def test_a_reload_without_model_list_keeps_every_model(store, clock) -> None:
    drift = Rule("drift", "drift_share", ">", 0.3)
    old = make_engine(store, clock, [drift])
    for m in ("churn", "fraud"):
        Feed(old, store, clock, model=m).window(HIGH, version=BASE)
    new = make_engine(store, clock, [drift])
    new.continue_activity(old)
    assert len(new._slots) == 2


# -- detector state of a version first seen after an upgrade ------------------------------

STEP = timedelta(minutes=15)  # Feed's window size
CUSUM = DetectorSpec("cusum", (("k", 0.5), ("h", 5.0), ("min_instances", 5)))


def _upgraded(store, clock, rule: Rule, n: int) -> Feed:
    """An instance whose one detector (an earlier release's, for every version) learned
    ``n`` baseline windows at drift share ~0.05, then this release's engine on it."""
    state = None
    for i in range(n):
        state, _, _ = detector_step(rule, state, 0.05 + 0.001 * (i % 3))
    last = WindowKey("churn", BASE, "", iso(T0 + (n - 1) * STEP), iso(T0 + n * STEP))
    with store.transaction():
        save_detector(store, alert_id=rule.instance_id("churn", "", "", ""), rule=rule.name, model="churn",
                      state=state, last_window_id=last.id, window_end=last.end, now=clock.now)
    return Feed(make_engine(store, clock, [rule]), store, clock, n=n)


def test_a_canary_first_seen_after_an_upgrade_starts_a_detector_of_its_own(store, clock) -> None:
    """The canary steady at 0.3 beside a baseline steady at 0.05: a level difference, not a
    change. It continued the baseline's detector (learned at 0.05) and fired on its first
    windows; the baseline goes on with that detector, learned already."""
    rule = Rule("slow", "drift_share", ">", detector=CUSUM)
    f = _upgraded(store, clock, rule, 20)
    fired = []
    for i in range(8):
        got = slot(f, (BASE, {"drift_share": 0.05 + 0.001 * (i % 3)}), (CANARY, {"drift_share": 0.3}))
        fired += [i for t in got if t.to_state == "firing"]
    assert fired == []
    # the baseline's detector was not restarted: its jump signals at once (a fresh one
    # would still be learning its level for min_instances windows)
    got = slot(f, (BASE, {"drift_share": 0.6}), (CANARY, {"drift_share": 0.3}))
    a = alert(store, rule)
    assert (a.state, a.version) == ("firing", BASE), got


def slot(f: Feed, first, second):
    out = f.window(first[1], version=first[0], advance=False)
    return out + f.window(second[1], version=second[0])


def alert(store, rule: Rule):
    return db.get_alert(store, rule.instance_id("churn", "", "", ""))


def test_the_slot_memory_keeps_no_instance_that_never_breached(store, clock) -> None:
    """A ``segment = "*"`` rule over segment values that come and go (each under the cap
    for a while): the memory kept one entry per value ever seen, growing for good. An
    instance without a row is judged the same without memory; only the breaching one is
    kept."""
    rule = Rule("drift", "drift_share", ">", 0.3, segment="*")
    f = feed_of(store, clock, rule)
    for i in range(40):
        f.window(LOW, version=BASE, segment=f"user={i}", advance=False)
        f.window(HIGH if i == 7 else LOW, version=CANARY, segment=f"user={i}")
        f.engine.finish_slots()
    assert sorted(f.engine._slots) == [rule.instance_id("churn", "", "user=7", "")]
    # the instances judged without memory behave as with it: a clear window of a slot
    # judged clear changes nothing, a breach is the instance's first
    f.n -= 1
    assert f.window(LOW, version=BASE, segment="user=39") == []
    assert events(f.window(HIGH, version="v14", segment="user=39")) == [("drift", "inactive", "firing")]


def feed_of(store, clock, rule: Rule) -> Feed:
    return Feed(make_engine(store, clock, [rule]), store, clock)


# -- a window whose rules raise ------------------------------------------------------------


def _judged(f: Feed, values: dict[str, float], version: str) -> bool:
    """One window judged as the pipeline judges it: in a savepoint of the flush whose rules
    raising store the window with status ``error`` instead. Whether its rules succeeded."""
    try:
        f.window(values, version=version)
    except ValueError:  # the corrupt detector state's JSON error
        return False
    return True


def test_a_clear_held_by_a_window_whose_rules_raised_is_not_counted(store, clock) -> None:
    """The baseline's clear window is held for the canary, then a later rule raises on that
    window (its detector's stored state is corrupt): the savepoint undoes the window's writes
    and it is stored as ``error``, but the held clear stayed in memory, and ``finish_slots``
    counted it: the alert resolved on a window whose judgement failed."""
    drift = Rule("drift", "drift_share", ">", 0.3)
    slow = Rule("slow", "drift_share", ">", detector=CUSUM)
    f = Feed(make_engine(store, clock, [drift, slow]), store, clock)
    with store.transaction():
        assert events(slot(f, (BASE, HIGH), (CANARY, HIGH))) == [("drift", "inactive", "firing")]
        f.engine.finish_slots()
    f.engine.flush_outcome(True)
    with store.transaction():
        store.execute("UPDATE rule_detectors SET state = '{' WHERE alert_id = ?",
                      (f"{slow.instance_id('churn', '', '', '')}@{BASE}",))
    with store.transaction():  # the next flush: the baseline's clear window fails, the canary stopped
        assert not _judged(f, LOW, BASE)
        assert f.engine.finish_slots() == []
    f.engine.flush_outcome(True)
    a = _alert(store)
    assert (a.state, a.clears) == ("firing", 0)
    # the memory is the first slot's again: its canary is still expected in the next slot
    mem = f.engine._slots[drift.instance_id("churn", "", "", "")]
    assert (mem.applied, sorted(s.ev.version for s in mem.seen.values())) == (True, [BASE, CANARY])


BUSY = '[[rules]]\nname = "busy"\nmetric = "row_count"\nop = ">"\nthreshold = 5000.0\nversion = "v12"\n'


def _figures(clock, n: int, version: str, values: dict[str, float]) -> WindowFigures:
    """Slot ``n``'s window of ``version`` of model churn, as the pipeline hands it over."""
    start = T0 + n * STEP
    clock.set(start + STEP)
    key = WindowKey("churn", version, "", iso(start), iso(start + STEP))
    return WindowFigures(WindowRecord(key, 1000, "ok", start + STEP), [MetricRow("", m, v) for m, v in values.items()])


def test_a_window_whose_transition_listener_raises_forgets_its_held_clear(tmp_path, store, clock) -> None:
    """The pipeline's savepoint of a window holds more than the engine's: here the listener
    of the transitions the window made raises after the engine judged it (the baseline's
    clear held for the canary, another rule firing). The window is stored as ``error``, its
    writes undone; its held clear must be too, or ``finish_slots`` counts it."""
    alerting = _alerting(tmp_path, store, clock, DRIFT + BUSY)
    model = alerting.config.models[0]

    def listener(kind: str, data: dict) -> None:
        if kind == "transition":
            raise RuntimeError("listener failed")

    with store.transaction():
        alerting.on_window(_figures(clock, 0, BASE, HIGH), model)
        alerting.on_window(_figures(clock, 0, CANARY, HIGH), model)
        alerting.finish_slots()
    alerting.flush_outcome(True)
    assert _alert(store).state == "firing"
    alerting.on_event = listener
    with store.transaction():
        try:
            with store.transaction():  # the pipeline's savepoint of the window
                alerting.on_window(_figures(clock, 1, BASE, {**LOW, "row_count": 6000.0}), model)
        except RuntimeError:
            pass
        alerting.finish_slots()
    alerting.flush_outcome(True)
    a = _alert(store)
    assert (a.state, a.clears) == ("firing", 0)
    assert [r.rule for r in db.active_alerts(store, ("pending", "firing"))] == ["drift"]


def test_a_window_whose_rules_raise_leaves_the_detectors_as_before(store, clock) -> None:
    """A detector rule fed the window's figure, then a later rule raised: the detector's
    update goes with the savepoint (its state lives in the store only; no copy in memory
    outlives the rollback), so the window is not counted in its series, and the next
    window continues from the state before it."""
    slow = Rule("slow", "drift_share", ">", detector=CUSUM)
    late = Rule("late", "drift_share", ">", detector=CUSUM)
    f = Feed(make_engine(store, clock, [slow, late]), store, clock)
    for i in range(6):
        slot(f, (BASE, {"drift_share": 0.05 + 0.001 * (i % 3)}), (CANARY, LOW))

    def state(rule: Rule) -> list[dict]:
        return store.query("SELECT alert_id, state, last_window_id, window_end FROM rule_detectors"
                           " WHERE rule = ? ORDER BY alert_id", (rule.name,))

    before = state(slow)
    with store.transaction():
        store.execute("UPDATE rule_detectors SET state = '{' WHERE rule = 'late'")
    assert not _judged(f, {"drift_share": 0.9}, BASE)
    assert state(slow) == before
    # the next window continues from the state before the failed one
    with store.transaction():
        store.execute("DELETE FROM rule_detectors WHERE rule = 'late'")
    f.window({"drift_share": 0.06}, version=BASE)
    base_key = f"{slow.instance_id('churn', '', '', '')}@{BASE}"
    expected, _, _ = detector_step(slow, json.loads(next(r["state"] for r in before if r["alert_id"] == base_key)), 0.06)
    got = next(r for r in state(slow) if r["alert_id"] == base_key)
    assert json.loads(got["state"]) == expected
