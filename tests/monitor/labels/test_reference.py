"""The labelled parts of a reference: its own performance figures (what relative rules
multiply) survive cells a careless export leaves empty, and a relative rule the reference
cannot give a figure for is refused at start-up instead of never firing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.config import ModelConfig, load_config
from monitor.labels.reference import prepare_labelled_reference
from monitor.references.load import ReferenceError
from monitor.service.pipeline import check_label_rules
from storage.records import DATASET
from tests.store_targets import state_storage_toml


def _regression_reference(path: Path, blank_label_at: int | None) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2 * x + 0.1 * rng.normal(size=50)
    rows = ["x,label,prediction"]
    rows += [f"{a},{'' if i == blank_label_at else b},{2 * a}" for i, (a, b) in enumerate(zip(x, y, strict=True))]
    path.write_text("\n".join(rows) + "\n")


def test_a_regression_reference_with_an_empty_label_cell_keeps_its_figures(tmp_path: Path) -> None:
    """One empty (or non-numeric) label read as NaN used to make every figure NaN, so the
    reference had none and relative rules on mae/rmse/mape/r2 silently never fired."""
    model = ModelConfig.model_validate({"name": "r", "task": "regression", "reference": str(tmp_path / "r.csv"),
                                        "features": {"numerical": ["x"]}})
    _regression_reference(tmp_path / "r.csv", blank_label_at=None)
    full = prepare_labelled_reference(model, tmp_path / "r.csv").figures
    _regression_reference(tmp_path / "r.csv", blank_label_at=7)
    gapped = prepare_labelled_reference(model, tmp_path / "r.csv").figures
    assert sorted(k for _, k in gapped) == ["mae", "mape", "r2", "rmse"]
    # the figures of the 49 labelled rows: close to the 50's, not NaN
    for key in ((DATASET, "mae"), (DATASET, "rmse"), (DATASET, "r2")):
        assert np.isfinite(gapped[key]) and gapped[key] == pytest.approx(full[key], rel=0.1), key


def test_a_relative_rule_without_the_references_figure_is_refused(tmp_path: Path) -> None:
    reference = tmp_path / "r.csv"
    reference.write_text("x,label,prediction\n" + "".join(f"{i},,{i}\n" for i in range(40)))  # no label at all
    cfg_path = tmp_path / "driftwarden.toml"
    cfg_path.write_text(
        '[kafka]\npredictions_topic = "p"\nlabels_topic = "l"\n'
        '[[models]]\nname = "r"\ntask = "regression"\nreference = "r.csv"\n'
        '[models.features]\nnumerical = ["x"]\n[models.performance]\nenabled = true\n'
        '[[rules]]\nname = "mae-worse"\nmetric = "mae"\nop = ">"\nthreshold = 1.5\nrelative = true\n'
    )
    cfg = load_config(cfg_path)
    refs = {"r": prepare_labelled_reference(cfg.models[0], reference)}
    with pytest.raises(ReferenceError, match=r"rules\[0\] \(mae-worse\) uses mae, which needs labels and predictions"
                                              r" giving its own mae"):
        check_label_rules(cfg, refs)
    _regression_reference(reference, blank_label_at=3)
    check_label_rules(cfg, {"r": prepare_labelled_reference(cfg.models[0], reference)})


def _unlabelled_regression(tmp_path: Path, rule: str) -> Path:
    (tmp_path / "r.csv").write_text("x,label,prediction\n" + "".join(f"{i},,{i}\n" for i in range(40)))
    path = tmp_path / "driftwarden.toml"
    path.write_text(
        '[daemon]\nstate_dir = "state"\n[kafka]\nbootstrap_servers = ["127.0.0.1:9"]\npredictions_topic = "p"\n'
        'labels_topic = "l"\n[[models]]\nname = "r"\ntask = "regression"\nreference = "r.csv"\n'
        '[models.features]\nnumerical = ["x"]\n[models.performance]\nenabled = true\n' + rule
        + state_storage_toml(tmp_path / "state")
    )
    return path


RELATIVE_MAE = '[[rules]]\nname = "mae-worse"\nmetric = "mae"\nop = ">"\nthreshold = 1.5\nrelative = true\n'


def test_check_refuses_what_run_would_refuse(tmp_path: Path) -> None:
    """`check` passed a rule the references cannot serve; `run` then exited 2, which the
    systemd unit does not restart."""
    from tests.monitor.daemon_helpers import run_cli

    res = run_cli("check", "--pre-start", "-c", str(_unlabelled_regression(tmp_path, RELATIVE_MAE)))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "rules[0] (mae-worse) uses mae, which needs labels and predictions giving its own mae" in res.stderr


def test_a_reload_refuses_a_rule_the_references_cannot_serve(tmp_path: Path) -> None:
    from monitor.service.daemon import Daemon
    from monitor.service.reload import ReloadRefused, prepare_reload

    path = _unlabelled_regression(tmp_path, "")
    daemon = Daemon(load_config(path), http=False)
    try:
        path.write_text(path.read_text() + RELATIVE_MAE)
        with pytest.raises(ReloadRefused, match=r"rules\[0\] \(mae-worse\) uses mae, which needs labels"):
            prepare_reload(daemon, path)
        path.write_text(path.read_text().replace("relative = true\n", ""))
        assert prepare_reload(daemon, path) is not None  # an absolute threshold needs no reference figure
    finally:
        daemon.close()


def test_a_score_models_label_classes_are_those_of_its_reference(tmp_path: Path) -> None:
    """The classes a score model's labels may be (others are dead letters): the reference's,
    when it names a negative one too; a reference of positives only, or without labels, or
    a class model's, restricts nothing."""
    model = ModelConfig.model_validate({"name": "c", "reference": str(tmp_path / "c.csv"),
                                        "features": {"numerical": ["x"]}})
    (tmp_path / "c.csv").write_text("x,label,prediction\n1,0,0.2\n2,1,0.9\n3,1,0.7\n")
    assert prepare_labelled_reference(model, tmp_path / "c.csv").classes == {"0", "1"}
    # a CSV label cell spelling a number is that number, as a label message's 1.0 is the class 1
    (tmp_path / "c.csv").write_text("x,label,prediction\n1,0,0.2\n2,1,0.9\n3,1.0,0.7\n")
    assert prepare_labelled_reference(model, tmp_path / "c.csv").classes == {"0", "1"}
    (tmp_path / "c.csv").write_text("x,label,prediction\n1,1,0.2\n2,1,0.9\n")
    assert prepare_labelled_reference(model, tmp_path / "c.csv").classes is None
    (tmp_path / "c.csv").write_text("x,prediction\n1,0.2\n2,0.9\n")
    assert prepare_labelled_reference(model, tmp_path / "c.csv").classes is None
    multi = ModelConfig.model_validate({
        "name": "m", "reference": str(tmp_path / "m.csv"), "class_of_interest": "a", "prediction_type": "categorical",
        "performance": {"enabled": True}, "features": {"numerical": ["x"]}})
    (tmp_path / "m.csv").write_text("x,label,prediction\n1,a,a\n2,b,a\n")
    assert prepare_labelled_reference(multi, tmp_path / "m.csv").classes is None


def test_a_label_drift_rule_on_a_reference_whose_labels_are_empty_is_refused(tmp_path: Path) -> None:
    """A label column with no label in it (a careless export) was prepared as an empty label
    reference: a rule on ``label_drift`` passed every check and never fired (the drift of an
    empty reference is never defined). It gives nothing now, with a warning, and the rule is
    refused like one on a reference without the column."""
    reference = tmp_path / "r.csv"
    reference.write_text("x,label,prediction\n" + "".join(f"{i},,{i}\n" for i in range(40)))
    cfg_path = tmp_path / "driftwarden.toml"
    cfg_path.write_text(
        '[kafka]\npredictions_topic = "p"\nlabels_topic = "l"\n'
        '[[models]]\nname = "r"\ntask = "regression"\nreference = "r.csv"\n'
        '[models.features]\nnumerical = ["x"]\n[models.performance]\nenabled = true\n'
        '[[rules]]\nname = "labels-moved"\nmetric = "label_drift"\ncolumn = "label"\nthreshold = 0.1\n'
    )
    cfg = load_config(cfg_path)
    lr = prepare_labelled_reference(cfg.models[0], reference)
    assert lr.labels is None and lr.warning is not None and "not one number in it" in lr.warning
    with pytest.raises(ReferenceError, match=r"rules\[0\] \(labels-moved\) uses label_drift, which needs a label"):
        check_label_rules(cfg, {"r": lr})
    _regression_reference(reference, blank_label_at=3)
    lr = prepare_labelled_reference(cfg.models[0], reference)
    assert lr.labels is not None and lr.warning is None
    check_label_rules(cfg, {"r": lr})


def test_an_uploaded_reference_that_cannot_serve_a_rule_is_refused(tmp_path: Path) -> None:
    """Start-up and a reload refuse a rule on ``estimated_*`` (``label_drift``, relative
    performance figures) whose reference has no labels; an uploaded reference without them
    was put in use anyway: the estimates stopped and the rule never fired again, silently.
    The upload is refused now, naming the rule, and the reference in force stays."""
    import pandas as pd

    from monitor.config import load_config as load
    from tests.monitor.labels.helpers import Clock, label_config, pipeline

    rule = '\n[[rules]]\nname = "est"\nmetric = "estimated_accuracy"\nop = "<"\nthreshold = 0.5\n'
    cfg_path = label_config(tmp_path, extra=rule, n_boot=0)
    _cfg, store, p = pipeline(cfg_path, Clock())
    assert load(cfg_path).rules[0].name == "est"
    assert p.labels is not None and p.labels.models["churn"].reference.calibrator is not None
    ref = pd.read_csv(tmp_path / "reference.csv")
    ref.drop(columns=["label"]).to_csv(tmp_path / "v2.csv", index=False)
    with pytest.raises(ReferenceError, match=r"rules\[0\] \(est\) uses estimated_accuracy, which needs labels"):
        p.swap_reference("churn", str(tmp_path / "v2.csv"), "v2")
    assert p.labels.models["churn"].reference.calibrator is not None
    assert not store.query("SELECT 1 FROM \"references\" WHERE version = 'v2'")
    ref.to_csv(tmp_path / "v3.csv", index=False)  # with its labels: taken
    p.swap_reference("churn", str(tmp_path / "v3.csv"), "v3")
    assert store.query("SELECT 1 FROM \"references\" WHERE version = 'v3'")
