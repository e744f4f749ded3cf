"""Config of the label join and performance windows: one tiny bad file per rule, exact messages;
and rule metrics validated against what the configured models can produce."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.monitor.test_config import load, problems

ON = "performance.enabled = true"

CASES: list[tuple[str, str, str, str]] = [
    (
        "needs-time-windows",
        ON + '\nwindow = { by = "count", size = 100 }',
        "",
        "models[0].performance.enabled: performance windows follow the predictions' event time:"
        ' expected window.by = "time", got "count"',
    ),
    (
        "threshold-without-join",
        "performance.threshold = 0.3",
        "",
        "models[0].performance.threshold: applies only with performance.enabled = true",
    ),
    (
        "baseline-without-join",
        'performance.baseline_version = "v1"',
        "",
        "models[0].performance.baseline_version: applies only with performance.enabled = true",
    ),
    (
        "threshold-for-class-predictions",
        ON + '\nprediction_type = "categorical"\nperformance.threshold = 0.3',
        "",
        "models[0].performance.threshold: applies only to classifiers that publish a score"
        ' (prediction_type = "numerical")',
    ),
    (
        "probabilities-without-join",
        "performance.probabilities = true",
        "",
        "models[0].performance.probabilities: applies only with performance.enabled = true",
    ),
    (
        "probabilities-for-class-predictions",
        ON + '\nprediction_type = "categorical"\nperformance.probabilities = true',
        "",
        "models[0].performance.probabilities: applies only to classifiers that publish a score"
        ' (prediction_type = "numerical")',
    ),
    (
        "threshold-outside-probabilities",
        ON + "\nperformance.probabilities = true\nperformance.threshold = 50.0",
        "",
        "models[0].performance.threshold: expected a value in [0, 1] with performance.probabilities ="
        " true (scores are probabilities), got 50.0",
    ),
    (
        "regression-categorical",
        ON + '\ntask = "regression"\nprediction_type = "categorical"',
        "",
        'models[0].prediction_type: expected "numerical" for a regression model with performance'
        ' enabled, got "categorical"',
    ),
    (
        "labels-topic-off",
        ON,
        '[kafka]\nlabels_topic = ""\n',
        'kafka.labels_topic: required by models[0].performance.enabled; expected a topic name like'
        ' "labels", got "" (off)',
    ),
    (
        "labels-topic-same",
        "",
        '[kafka]\npredictions_topic = "events"\nlabels_topic = "events"\n',
        'kafka.labels_topic: expected a topic other than predictions_topic, got "events"',
    ),
    (
        "coverage",
        "",
        "[labels]\ncoverage = 0.0\n",
        "labels.coverage: expected a number > 0, got 0.0",
    ),
    (
        "delay-negative",
        "",
        '[labels]\ndelay = "-1h"\n',
        'labels.delay: expected a duration like "15m", got "-1h"',
    ),
    (
        "delay-after-ttl",
        ON,
        '[labels]\nttl = "1h"\ndelay = "2h"\n',
        'labels.delay: expected less than labels.ttl ("1h"): a window must mature before its'
        ' predictions leave the join, got "2h"',
    ),
    (
        "labels-without-a-labelled-model",
        "",
        '[labels]\nttl = "2d"\n',
        "labels: expected only with a model whose [models.performance] enabled = true (no model joins"
        " labels, so these settings change nothing)",
    ),
    (
        "bootstrap",
        "",
        "[labels]\nbootstrap = -1\n",
        "labels.bootstrap: expected a number >= 0, got -1",
    ),
    (
        "max-early",
        "",
        "[labels]\nmax_early = 0\n",
        "labels.max_early: expected a number >= 1, got 0",
    ),
    (
        "rule-typo",
        ON,
        '[[rules]]\nname = "r"\nmetric = "acuracy"\nthreshold = 0.9\n',
        'rules[0].metric: unknown metric "acuracy" for model "churn"; did you mean "accuracy"?',
    ),
    (
        "rule-performance-without-join",
        "",
        '[[rules]]\nname = "r"\nmetric = "accuracy"\nop = "<"\nthreshold = 0.9\n',
        'rules[0].metric: "accuracy" needs [models.performance] enabled = true'
        ' (model "churn" has no such figure)',
    ),
    (
        "rule-comparison-without-baseline",
        ON,
        '[[rules]]\nname = "r"\nmetric = "accuracy_worse_p"\nop = "<"\nthreshold = 0.01\n',
        'rules[0].metric: "accuracy_worse_p" needs [models.performance] enabled = true and'
        ' baseline_version (model "churn" has no such figure)',
    ),
    (
        "rule-comparison-pinned-to-the-baseline",
        ON + '\nperformance.baseline_version = "v1"',
        '[[rules]]\nname = "r"\nmetric = "accuracy_worse_p"\nop = "<"\nthreshold = 0.01\nversion = "v1"\n',
        'rules[0].version: "v1" is the baseline_version the other versions are compared with, so its own'
        ' windows never have "accuracy_worse_p"; expected the canary\'s version, "*" (each other version)'
        " or no version (any version)",
    ),
    (
        "rule-regression-figure-on-classifier",
        ON,
        '[[rules]]\nname = "r"\nmetric = "mae"\nthreshold = 1.0\n',
        'rules[0].metric: "mae" is a figure of a regression model; model "churn" is not one',
    ),
    (
        "rule-latency-without-field",
        "",
        '[[rules]]\nname = "r"\nmetric = "latency_p99"\nthreshold = 1.0\n',
        'rules[0].metric: "latency_p99" needs [models.fields] latency = "<field>"'
        ' (model "churn" has no such figure)',
    ),
]


@pytest.mark.parametrize(
    ("model", "rest", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_file_gives_exact_message(tmp_path: Path, model: str, rest: str, message: str) -> None:
    assert problems(tmp_path, rest, model) == [message]


def test_the_label_join_is_accepted_on_a_shared_postgresql_store(tmp_path: Path) -> None:
    """The join runs on both stores: performance with a storage.url loads (it was refused
    while the join needed SQLite)."""
    cfg = load(tmp_path, '[storage]\nurl = "postgresql://driftwarden@127.0.0.1:5432/dw"\n', model=ON)
    assert cfg.storage.url == "postgresql://driftwarden@127.0.0.1:5432/dw"
    assert cfg.models[0].performance.enabled is True and cfg.kafka.labels_topic == "labels"


def test_defaults_and_a_full_label_setup(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    lab = cfg.labels
    assert (lab.ttl, lab.early_ttl, lab.delay) == (timedelta(days=7), timedelta(days=1), timedelta(hours=1))
    assert (lab.coverage, lab.bootstrap, lab.confidence) == (0.95, 200, 0.95)
    assert cfg.models[0].performance.enabled is False
    cfg = load(
        tmp_path,
        '[labels]\nttl = "2d"\ndelay = "0s"\n[[rules]]\nname = "canary"\nmetric = "accuracy_worse_p"\n'
        'op = "<"\nthreshold = 0.01\nversion = "*"\n[[rules]]\nname = "gap"\nmetric = "f1_segment_gap"\n'
        'op = "<"\nthreshold = -0.1\n[[rules]]\nname = "lat"\nmetric = "latency_p99"\nthreshold = 250.0\n'
        '[[rules]]\nname = "est"\nmetric = "estimated_accuracy"\nop = "<"\nthreshold = 0.8\n',
        model=ON + '\nperformance.baseline_version = "v1"\nperformance.threshold = 0.3\n'
        'segments = ["region"]\nfields = { latency = "latency_ms" }',
    )
    m = cfg.models[0]
    assert (m.performance.threshold, m.performance.baseline_version) == (0.3, "v1")
    assert m.fields.latency == "latency_ms" and cfg.labels.delay == timedelta(0)
    assert [r.metric for r in cfg.rules] == [
        "accuracy_worse_p", "f1_segment_gap", "latency_p99", "estimated_accuracy"
    ]
    # label drift is a figure of the label column
    cfg = load(tmp_path, '[[rules]]\nname = "ld"\nmetric = "label_drift"\ncolumn = "label"\nthreshold = 0.1\n', model=ON)
    assert cfg.rules[0].column == "label"
    assert problems(tmp_path, '[[rules]]\nname = "ld"\nmetric = "drifted"\ncolumn = "label"\nthreshold = 0.5\n') == [
        'rules[0].column: unknown column "label"; expected one of: age, plan, prediction'
    ]


def test_a_comparison_rule_on_the_canary_or_any_version_is_accepted(tmp_path: Path) -> None:
    """Only the baseline's own version is refused: the canary's, "*" and none load."""
    model = ON + '\nperformance.baseline_version = "v1"'
    for version in ('\nversion = "v2"', '\nversion = "*"', ""):
        cfg = load(tmp_path, '[[rules]]\nname = "r"\nmetric = "f1_delta"\nop = "<"\nthreshold = 0.0' + version + "\n",
                   model=model)
        assert cfg.rules[0].metric == "f1_delta"


def test_a_rule_on_labels_of_unknown_classes_needs_a_score_model(tmp_path: Path) -> None:
    """``labels_unknown_class`` (labels joined under an earlier reference whose class the one
    in use lacks) is a figure of score models' performance windows: a rule may watch it."""
    rule = '[[rules]]\nname = "odd"\nmetric = "labels_unknown_class"\nthreshold = 0\n'
    assert load(tmp_path, rule, model=ON).rules[0].metric == "labels_unknown_class"
    assert any("labels_unknown_class" in p for p in problems(
        tmp_path, rule, model=ON + '\nprediction_type = "categorical"'))
