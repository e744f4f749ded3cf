"""Regression and multi-class models through the real Pipeline and store (SQLite and PostgreSQL):
numbers and classes as labels, figures equal scikit-learn's on the joined rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn import metrics as skm

from tests.monitor.labels.helpers import (
    NOW_MS,
    Clock,
    Rec,
    label_config,
    metric,
    pipeline,
    predictions,
)
from tests.monitor.labels.test_join import feed, settle
from tests.store_targets import StoreTarget

WID = "churn|v1||2026-11-23T12:{0:02d}:00.000Z|2026-11-23T12:{1:02d}:00.000Z"


def run(
    tmp: Path, model_lines: str, preds: list[dict[str, Any]], labels: list[dict[str, Any]],
    reference_classes: list[str] | None = None, target: StoreTarget | None = None,
) -> Any:
    cfg_path = label_config(tmp, n_boot=30)
    if reference_classes is not None:  # the reference's labels are these classes (at random)
        import pandas as pd

        ref = pd.read_csv(tmp / "reference.csv")
        ref["label"] = np.random.default_rng(1).choice(reference_classes, len(ref))
        ref.to_csv(tmp / "reference.csv", index=False)
    text = cfg_path.read_text().replace('[models.features]', model_lines + "\n[models.features]", 1)
    cfg_path.write_text(text)
    clock = Clock()
    _cfg, store, p = pipeline(cfg_path, clock, target=target)
    feed(p, clock, [Rec("predictions", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(preds)], labels=False)
    feed(p, clock, [Rec("labels", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(labels)], labels=True)
    settle(p, clock)
    return store


def assert_multiclass_figures(store: Any, preds: list[dict[str, Any]], truth: dict[str, str]) -> None:
    """Each of the 3 windows of 200 predictions has scikit-learn's figures of its rows
    (class of interest "pro"), and no ROC AUC: a class, not a score."""
    for w in range(3):
        rows = preds[w * 200 : (w + 1) * 200]
        t = np.array([truth[r["event_id"]] for r in rows], dtype=object)
        p = np.array([r["prediction"] for r in rows], dtype=object)
        wid = WID.format(w, w + 1)
        expected = {"accuracy": skm.accuracy_score(t, p), "f1": skm.f1_score(t == "pro", p == "pro")}
        for avg in ("macro", "weighted"):
            expected[f"precision_{avg}"] = skm.precision_score(t, p, average=avg, zero_division=0)
            expected[f"recall_{avg}"] = skm.recall_score(t, p, average=avg, zero_division=0)
            expected[f"f1_{avg}"] = skm.f1_score(t, p, average=avg, zero_division=0)
        for name, value in expected.items():
            got = metric(store, wid, name)
            assert got is not None and abs(got - value) <= 1e-12 * max(1.0, abs(value)), (name, got, value)
        assert metric(store, wid, "roc_auc") is None


def test_regression(tmp_path: Path, store_target: StoreTarget) -> None:
    preds = predictions(windows=3, per_window=200)
    rng = np.random.default_rng(3)
    truth = {}
    for ev in preds:
        y = round(float(rng.normal(100, 20)), 3)
        truth[ev["event_id"]] = y
        ev["prediction"] = round(y + float(rng.normal(0, 5)), 3)
    ts = {ev["event_id"]: int(ev["ts"]) + 600_000 for ev in preds}
    labels = [{"event_id": e, "model": "churn", "label": y, "ts": ts[e]} for e, y in truth.items()]
    labels[5]["label"] = int(labels[5]["label"])  # an integer is a number too
    truth[labels[5]["event_id"]] = float(labels[5]["label"])
    store = run(tmp_path, 'task = "regression"', preds, labels, target=store_target)
    for w in range(3):
        rows = preds[w * 200 : (w + 1) * 200]
        t = np.array([truth[r["event_id"]] for r in rows])
        p = np.array([r["prediction"] for r in rows])
        wid = WID.format(w, w + 1)
        for name, value in {
            "mae": skm.mean_absolute_error(t, p), "rmse": skm.root_mean_squared_error(t, p),
            "mape": skm.mean_absolute_percentage_error(t, p), "r2": skm.r2_score(t, p),
        }.items():
            got = metric(store, wid, name)
            assert got is not None and abs(got - value) <= 1e-12 * max(1.0, abs(value)), (name, got, value)
    assert metric(store, WID.format(0, 1), "label_drift") is not None  # against the reference's labels


def test_multiclass(tmp_path: Path, store_target: StoreTarget) -> None:
    preds = predictions(windows=3, per_window=200)
    rng = np.random.default_rng(4)
    classes = ["basic", "pro", "enterprise"]
    truth = {}
    for ev in preds:
        y = classes[int(rng.integers(0, 3))]
        truth[ev["event_id"]] = y
        ev["prediction"] = y if rng.random() < 0.6 else classes[int(rng.integers(0, 3))]
    ts = {ev["event_id"]: int(ev["ts"]) + 600_000 for ev in preds}
    labels = [{"event_id": e, "model": "churn", "label": y, "ts": ts[e]} for e, y in truth.items()]
    store = run(tmp_path, 'prediction_type = "categorical"\nclass_of_interest = "pro"', preds, labels,
                reference_classes=classes, target=store_target)
    assert_multiclass_figures(store, preds, truth)


def test_a_very_long_predicted_class_is_held_short_and_figures_are_unchanged(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """The join held a predicted class as it came, up to the message size cap, for the
    whole ``labels.ttl``: 400 predictions of 500,000 characters held 200 MB. No label can
    be longer than ``limits.max_value_length`` (128; a longer one is a dead letter), so a
    longer class is held as 128 characters, ``…`` and a digest: still a wrong class of its
    own, and every figure equals scikit-learn's on the classes as sent."""
    preds = predictions(windows=3, per_window=200)
    rng = np.random.default_rng(4)
    classes = ["basic", "pro", "enterprise"]
    truth = {}
    for i, ev in enumerate(preds):
        y = classes[int(rng.integers(0, 3))]
        truth[ev["event_id"]] = y
        ev["prediction"] = y if rng.random() < 0.6 else classes[int(rng.integers(0, 3))]
        if i % 40 == 3:  # 14 hostile predictions of 3 classes (60,001 characters), one exactly at the cap
            ev["prediction"] = "pro" * 20_000 + str(i % 3)
        if i == 3:
            ev["prediction"] = "p" * 128
    ts = {ev["event_id"]: int(ev["ts"]) + 600_000 for ev in preds}
    labels = [{"event_id": e, "model": "churn", "label": y, "ts": ts[e]} for e, y in truth.items()]
    store = run(tmp_path, 'prediction_type = "categorical"\nclass_of_interest = "pro"', preds, labels,
                reference_classes=classes, target=store_target)
    held = [r["prediction"] for r in store.query("SELECT prediction FROM label_predictions")]
    assert len(held) == len(preds) and max(map(len, held)) == 128 + 1 + 32 and len(set(held)) == 3 + 1 + 3
    assert_multiclass_figures(store, preds, truth)
