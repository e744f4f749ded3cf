"""A label column the config names (``models.label``) but the reference lacks: the model
still runs (labels in the reference are optional), but `check` and the daemon say what is
lost, so a misspelt name does not silently give no label drift, estimate or reference figures."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from monitor.config import load_config
from monitor.labels.reference import prepare_labelled_reference
from monitor.service.pipeline import Pipeline
from tests.monitor.daemon_helpers import run_cli
from tests.monitor.labels.helpers import label_config
from tests.store_targets import open_state_store


def _config(tmp_path: Path, label: str | None) -> Path:
    """A label-joining config whose reference has its ground truth in column ``label``,
    naming ``label`` (None: leaving models.label at its default)."""
    path = label_config(tmp_path)
    if label is not None:
        text = path.read_text().replace('name = "churn"\n', f'name = "churn"\nlabel = "{label}"\n', 1)
        assert text != path.read_text()
        path.write_text(text)
    return path


def _warning(tmp_path: Path, label: str) -> str:
    ref = (tmp_path / "reference.csv").resolve()
    return (f"model churn: reference {ref} has no column {label!r} (models.label): no label drift,"
            " estimated performance or reference figures; name a column the file holds, add the labels"
            " to it, or drop models.label")


def test_a_named_label_column_the_reference_lacks_is_a_warning(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "outcome"))
    m = cfg.models[0]
    lr = prepare_labelled_reference(m, m.reference)
    assert (lr.labels, lr.calibrator, lr.warning) == (None, None, _warning(tmp_path, "outcome"))
    checked = run_cli("check", "-c", str(_config(tmp_path, "outcome")))
    assert f"! {_warning(tmp_path, 'outcome')}" in checked.stdout.splitlines(), checked.stdout


def test_no_warning_when_the_column_is_there_or_the_default_is_not_in_the_file(tmp_path: Path) -> None:
    named = load_config(_config(tmp_path / "named", "label")).models[0]
    lr = prepare_labelled_reference(named, named.reference)
    assert (lr.labels is not None, lr.warning) == (True, None)
    default = load_config(_config(tmp_path / "default", None)).models[0]
    ref = default.reference
    pd.read_csv(ref).drop(columns=["label"]).to_csv(ref, index=False)  # a reference without labels
    lr = prepare_labelled_reference(default, ref)
    assert (lr.labels, lr.warning) == (None, None)


def test_the_daemon_logs_the_warning_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(_config(tmp_path, "outcome"))
    with caplog.at_level(logging.WARNING, logger="driftwarden.pipeline"):
        Pipeline(cfg, open_state_store(cfg.daemon.state_dir))
    assert _warning(tmp_path, "outcome") in [r.getMessage() for r in caplog.records]
