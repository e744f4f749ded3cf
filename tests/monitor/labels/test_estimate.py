"""Estimated performance before labels (CBPE): stored when the drift window closes, alerting
before any label exists; the realized figure and the estimation error follow the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from detectors.estimation import estimate_binary, fit_calibrator
from monitor.config import load_config
from monitor.demo.data import events, label_events
from monitor.service.alerting import Alerting
from monitor.service.pipeline import Pipeline
from tests.monitor.daemon_helpers import START
from tests.monitor.labels.helpers import NOW_MS, Clock, Rec, label_config
from tests.monitor.labels.test_join import settle
from tests.store_targets import StoreTarget, open_state_store

RULES = """
[[rules]]
name = "estimate-low"
metric = "estimated_accuracy"
op = "<"
threshold = 0.78
[[rules]]
name = "accuracy-low"
metric = "accuracy"
op = "<"
threshold = 0.78
[[rules]]
name = "accuracy-relative"
metric = "accuracy"
op = "<"
threshold = 0.95
relative = true
"""


def test_the_estimate_alerts_before_the_labels_confirm_it(tmp_path: Path, store_target: StoreTarget) -> None:
    """On SQLite and PostgreSQL: the estimates stored with the windows, the alerts judged on
    performance windows, the estimation errors read back from the data figures."""
    cfg = load_config(label_config(tmp_path, extra=RULES, n_boot=0))
    store = store_target.open()
    clock = Clock()
    alerting = Alerting(cfg, store, clock=clock)
    p = Pipeline(cfg, store, clock=clock, on_window=alerting.on_window, on_performance=alerting.on_performance)
    preds = list(events(model="churn", start=START, windows=8, per_window=600, window_seconds=60, shift_from=4, seed=21))
    p.process_records([Rec("predictions", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(preds)])
    p.flush()

    def alerts() -> dict[str, str]:
        return {a["rule"]: a["state"] for a in store.query("SELECT rule, state FROM alerts")}

    # no label yet: the estimate already sees the drop of the shifted windows
    assert alerts() == {"estimate-low": "firing"}
    ref = pd.read_csv(tmp_path / "reference.csv")
    cal = fit_calibrator(ref["prediction"].to_numpy(), ref["label"].to_numpy() == 1)
    for w in range(7):  # the last window is still open
        start = START.replace(minute=w)
        wid = f"churn|v1||{start.strftime('%Y-%m-%dT%H:%M')}:00.000Z|{START.replace(minute=w + 1).strftime('%Y-%m-%dT%H:%M')}:00.000Z"
        scores = np.array([e["prediction"] for e in preds[w * 600 : (w + 1) * 600]], dtype=float)
        est = estimate_binary(cal, scores)
        got = {r["metric"]: r["value"] for r in store.query(
            "SELECT metric, value FROM metrics WHERE window_id = ? AND family = 'data'", (wid,))}
        assert got["estimated_accuracy"] == pytest.approx(est.accuracy, rel=1e-12)
        assert got["estimated_roc_auc"] == pytest.approx(est.roc_auc, rel=1e-12)
        assert (got["estimated_accuracy"] < 0.78) == (w >= 4), (w, got["estimated_accuracy"])

    labels = label_events(preds, seed=22)
    for ev in labels:
        ev["ts"] = int(ev["ts"]) + 20 * 60_000
    p.process_label_records([Rec("labels", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(labels)])
    p.flush()
    settle(p, clock)
    assert alerts() == {"estimate-low": "firing", "accuracy-low": "firing", "accuracy-relative": "firing"}
    errors = [r["value"] for r in store.query(
        "SELECT value FROM metrics WHERE metric = 'accuracy_estimation_error' AND window_id LIKE 'churn|v1||%'")]
    assert len(errors) == 8 and max(abs(e) for e in errors) < 0.06, errors  # the idle tick closed the 8th
    # the relative rule compares with the reference's own accuracy (labels and predictions in the file)
    th = store.query("SELECT threshold FROM alerts WHERE rule = 'accuracy-relative'")[0]["threshold"]
    ref_acc = float(((ref["prediction"] >= 0.5) == (ref["label"] == 1)).mean())
    assert th == pytest.approx(0.95 * ref_acc, rel=1e-12)


def test_a_class_of_interest_the_reference_never_labels_is_refused(tmp_path: Path) -> None:
    """Class names like "churn"/"stay" with the default class_of_interest (1) would make
    precision, recall and F1 0 in every window: refused, naming the key and the classes."""
    from monitor.labels.reference import prepare_labelled_reference
    from monitor.references.load import ReferenceError
    from tests.monitor.test_config import load

    cfg = load(tmp_path, "", 'label = "label"\ntask = "classification"\nperformance.enabled = true')
    ref = tmp_path / "labelled.csv"
    ref.write_text("age,plan,prediction,label\n42,pro,0.9,churn\n40,pro,0.2,stay\n41,pro,0.7,churn\n")
    with pytest.raises(ReferenceError, match=r"class_of_interest = 1 is none of the classes in column 'label' \(churn, stay\)"):
        prepare_labelled_reference(cfg.models[0], ref)
    good = cfg.models[0].model_copy(update={"class_of_interest": "churn"})
    assert prepare_labelled_reference(good, ref).rows == 3


def test_rules_on_figures_the_reference_cannot_give_are_refused(tmp_path: Path) -> None:
    """label_drift needs the reference's labels, an estimate needs labels and scores: a rule on
    one the reference cannot give would never fire, so start-up refuses it, naming the rule."""
    from monitor.references.load import ReferenceError
    from tests.monitor.labels.helpers import label_config

    rule = '[[rules]]\nname = "labels-moved"\nmetric = "label_drift"\ncolumn = "label"\nop = ">"\nthreshold = 0.1\n'
    cfg_path = label_config(tmp_path, extra=rule)
    ref = tmp_path / "reference.csv"
    with_labels = ref.read_text()
    pd.read_csv(ref).drop(columns=["label"]).to_csv(ref, index=False)
    cfg = load_config(cfg_path)
    with pytest.raises(ReferenceError, match=r"rules\[0\] \(labels-moved\) uses label_drift, which needs a label column"):
        Pipeline(cfg, open_state_store(cfg.daemon.state_dir))
    ref.write_text(with_labels)
    assert Pipeline(cfg, open_state_store(cfg.daemon.state_dir)).labels is not None
