"""Rule validation and which figures a rule judges (exact values)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.rules import Rule
from storage.records import MetricRow, WindowKey

KEY = WindowKey("churn", "v12", "", "2026-11-23T14:00:00.000Z", "2026-11-23T14:15:00.000Z")
ROWS = [
    MetricRow("", "drift_share", 0.5),
    MetricRow("", "row_count", 900.0),
    MetricRow("age", "wasserstein", 0.31, 0.1, True, test="wasserstein"),
    MetricRow("plan", "jensenshannon", 0.05, 0.1, False, test="jensenshannon"),
    MetricRow("plan", "missing_share", 0.2),
    MetricRow("tenure", "wasserstein", None, 0.1, None),
    MetricRow("", "accuracy", 0.81),
]


def judged(rule: Rule, key: WindowKey = KEY, rows=ROWS, reference=None):
    return [
        (e.column, e.value, e.threshold, e.breached) for e in rule.evaluations(key, rows, reference)
    ]


@pytest.mark.parametrize(
    ("op", "value", "breached"),
    [(">", 0.5, True), (">", 0.3, False), (">=", 0.3, True), ("<", 0.2, True), ("<=", 0.3, True),
     ("<=", 0.31, False), ("==", 0.3, True), ("!=", 0.3, False)],
)  # fmt: skip
def test_ops(op, value, breached):
    assert Rule("r", "m", op, 0.3).breached(value, 0.3) is breached


def test_dataset_level_by_default():
    assert judged(Rule("r", "drift_share", ">", 0.3)) == [("", 0.5, 0.3, True)]


def test_any_column_one_evaluation_per_column():
    assert judged(Rule("r", "wasserstein", ">", 0.1, column="*")) == [("age", 0.31, 0.1, True)]
    # the None value of "tenure" is not judged


def test_named_column():
    assert judged(Rule("r", "missing_share", ">", 0.1, column="plan")) == [("plan", 0.2, 0.1, True)]
    assert judged(Rule("r", "missing_share", ">", 0.1, column="age")) == []


def test_drifted_verdict_pseudo_metric():
    assert judged(Rule("r", "drifted", "==", 1, column="*")) == [
        ("age", 1.0, 1.0, True),
        ("plan", 0.0, 1.0, False),
    ]


def test_relative_threshold_is_a_multiple_of_the_reference_figure():
    rule = Rule("r", "accuracy", "<", 0.9, relative=True)
    assert judged(rule, reference={("", "accuracy"): 0.95}) == [
        ("", 0.81, pytest.approx(0.855), True)
    ]
    assert judged(rule, reference={("", "accuracy"): 0.85}) == [
        ("", 0.81, pytest.approx(0.765), False)
    ]
    assert judged(rule, reference={}) == []  # no reference figure: not judged


def test_segment_selection():
    seg = WindowKey("churn", "v12", "region=eu", KEY.start, KEY.end)
    overall = Rule("r", "drift_share", ">", 0.3)
    every = Rule("r", "drift_share", ">", 0.3, segment="*")
    eu = Rule("r", "drift_share", ">", 0.3, segment="region=eu")
    us = Rule("r", "drift_share", ">", 0.3, segment="region=us")
    assert (overall.matches_window(KEY), overall.matches_window(seg)) == (True, False)
    assert (every.matches_window(KEY), every.matches_window(seg)) == (False, True)
    assert (eu.matches_window(seg), us.matches_window(seg)) == (True, False)


def test_version_and_model_selection_and_instance_ids():
    v13 = WindowKey("churn", "v13", "", KEY.start, KEY.end)
    any_version = Rule("r", "drift_share", ">", 0.3)
    per_version = Rule("r", "drift_share", ">", 0.3, version="*")
    only_v12 = Rule("r", "drift_share", ">", 0.3, version="v12")
    assert any_version.instance_id("churn", "", "", "v12") == any_version.instance_id(
        "churn", "", "", "v13"
    )
    assert per_version.instance_id("churn", "", "", "v12") != per_version.instance_id(
        "churn", "", "", "v13"
    )
    assert (only_v12.matches_window(KEY), only_v12.matches_window(v13)) == (True, False)
    assert Rule("r", "m", ">", 1, model="fraud").matches_window(KEY) is False
    assert per_version.instance_labels("churn", "", "", "v13")["version"] == "v13"
    assert "version" not in any_version.instance_labels("churn", "", "", "v13")


def test_instance_id_is_stable():
    # persisted alerts are found again after a restart: the id must never change
    assert Rule("drift", "drift_share", ">", 0.3).instance_id("churn", "", "", "v12") == (
        "alr_406b32845094e0db1574"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"op": "=>"}, "op must be one of >, >=, <, <=, ==, !=, got '=>'"),
        ({"severity": "page"}, "severity must be 'warning' or 'critical', got 'page'"),
        ({"for_windows": 0}, "for_windows must be >= 1, got 0"),
        ({"resolve_after": 0}, "resolve_after must be >= 1, got 0"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"repeat_interval": timedelta(0)}, "repeat_interval must be positive"),
        ({"no_data_for": timedelta(minutes=5)}, "no_data_for applies only to metric 'no_data'"),
        ({"metric": "no_data"}, "metric 'no_data' needs a positive no_data_for"),
        ({"model": ""}, "model must be a name or omitted"),
    ],
)
def test_validation_messages(kwargs, message):
    args = {"name": "r", "metric": "drift_share", "op": ">", "threshold": 0.3, **kwargs}
    with pytest.raises(ValueError) as err:
        Rule(**args)
    assert str(err.value) == f"rule 'r': {message}"


def test_an_infinite_figure_is_judged_but_never_fed_to_a_change_detector() -> None:
    from alerts.rules import DetectorSpec

    inf = [MetricRow("", "drift_share", float("inf")), MetricRow("", "row_count", float("nan"))]
    plain = Rule("r", "drift_share", ">", 0.3)
    assert [(e.value, e.breached) for e in plain.evaluations(KEY, inf)] == [(float("inf"), True)]
    assert list(Rule("n", "row_count", "<", 10.0).evaluations(KEY, inf)) == []  # NaN: absent
    cusum = Rule("c", "drift_share", ">", 0.0, detector=DetectorSpec("cusum", (("k", 0.5), ("h", 5.0))))
    assert list(cusum.evaluations(KEY, inf)) == []  # its sums would stay infinite


def test_a_relative_rule_compares_an_infinite_figure_and_skips_an_infinite_reference() -> None:
    rule = Rule("r", "row_count", "<", 0.5, relative=True)
    rows = [MetricRow("", "row_count", float("-inf"))]
    assert [(e.value, e.threshold, e.breached) for e in rule.evaluations(KEY, rows, {("", "row_count"): 100.0})] == [
        (float("-inf"), 50.0, True)]
    assert list(rule.evaluations(KEY, rows, {("", "row_count"): float("inf")})) == []
