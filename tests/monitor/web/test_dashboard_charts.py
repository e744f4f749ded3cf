"""The dashboard's chart data says what each chart's numbers are: a p-value or a distance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from monitor.web.dashboard import charts
from storage.overview import drift_history
from storage.records import MetricRow, WindowKey, WindowRecord
from storage.windows import write_window
from tests.store_targets import open_state_store


def test_each_chart_names_whether_its_score_is_a_p_value_or_a_distance(tmp_path: Path) -> None:
    # a KS chart and a Wasserstein chart were captioned "amount · ks" and "income ·
    # wasserstein", their series both "score": a p-value of 1e-19 read like a distance
    store = open_state_store(tmp_path)
    try:
        with store.transaction():
            key = WindowKey("churn", "", "", "2026-11-23T12:00:00.000Z", "2026-11-23T12:05:00.000Z")
            write_window(store, WindowRecord(key, 300, "ok", datetime.now(UTC)), [
                MetricRow("", "drift_share", 1.0, 0.5, True),
                MetricRow("amount", "drift_score", 1.14e-19, 0.05, True, p_value=1.14e-19, test="ks"),
                MetricRow("income", "drift_score", 0.31, 0.1, True, test="wasserstein"),
                MetricRow("plan", "drift_score", 0.5, 0.1, True, test="no_such_test"),
            ])
        data = charts(drift_history(store, "churn"))
    finally:
        store.close()
    by_title = {c["title"]: c for c in data["charts"]}
    assert {t: (c["tests"], c["score"], c["drift_when"]) for t, c in by_title.items()} == {
        "dataset drift share": ([], "share", "higher"),
        "amount": (["ks"], "p-value", "lower"),
        "income": (["wasserstein"], "distance", "higher"),
        "plan": (["no_such_test"], None, "higher"),  # a name this build does not know: not guessed
    }
    # the figures themselves are unchanged
    assert by_title["amount"]["drifted"] == [1.14e-19]
