"""Property: for any breach/clear sequence the engine agrees with a tiny reference
model of the lifecycle, and notifies exactly on entering firing and on resolving."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.rules import Rule
from storage import alerts as db
from tests.alerts.conftest import Clock, Feed, make_engine


def reference(seq: list[bool], for_windows: int, resolve_after: int) -> tuple[str, list[str]]:
    state, breaches, clears, notes = "inactive", 0, 0, []
    for b in seq:
        if b:
            clears = 0
            breaches = breaches + 1 if state in ("pending", "firing") else 1
            if state != "firing" and breaches >= for_windows:
                state = "firing"
                notes.append("firing")
            elif state in ("inactive", "resolved"):
                state = "pending"
        else:
            breaches = 0
            if state == "pending":
                state = "inactive"
            elif state == "firing":
                clears += 1
                if clears >= resolve_after:
                    state, clears = "resolved", 0
                    notes.append("resolved")
    return state, notes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seq=st.lists(st.booleans(), min_size=1, max_size=25),
    for_windows=st.integers(1, 4),
    resolve_after=st.integers(1, 3),
)
def test_engine_matches_reference_lifecycle(store_target, seq, for_windows, resolve_after):
    rule = Rule(
        "drift", "drift_share", ">", 0.3, for_windows=for_windows, resolve_after=resolve_after
    )
    store = store_target.fresh().open(synchronous="OFF")
    clock = Clock()
    f = Feed(make_engine(store, clock, (rule,)), store, clock)
    for b in seq:
        f.window({"drift_share": 0.6 if b else 0.1})
    want_state, want_notes = reference(seq, for_windows, resolve_after)
    alert = db.get_alert(store, rule.instance_id("churn", "", "", "v12"))
    got_state = "inactive" if alert is None else alert.state
    assert got_state == want_state
    assert [d.kind for d in db.list_deliveries(store)] == want_notes
    store.close()
