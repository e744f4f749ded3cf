"""A reference's CSV cells are read as the live decoder reads the same values: a
categorical cell or class label is the text as written ("NA", "01", "True", "null" stay
those strings; only an empty cell is missing), a numerical cell a number (empty and the
usual missing markers are missing; other text is refused naming column and row).

pandas' type guessing used to turn "NA" into a missing value, "01" into "1" and "True"
into "true", so the live stream's same values showed as new categories: drift alarms."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from monitor.cli.check import check_references
from monitor.config import ModelConfig, load_config
from monitor.labels.decode import class_label
from monitor.labels.reference import prepare_labelled_reference
from monitor.references.load import ReferenceError, ReferenceSpec, load_reference
from monitor.service.replay import run_replay
from storage.db import Store

REGIONS = ["NA", "01", "02", "10"]  # Namibia and zip-like codes: every one also a "number" or "missing"
FLAGS = ["True", "False"]

CONFIG = """
[daemon]
state_dir = "state"
[kafka]
predictions_topic = "p"
[[models]]
name = "m"
reference = "ref.csv"
[models.features]
numerical = ["age"]
categorical = ["region", "flag"]
[models.window]
type = "tumbling"
size = "1m"
lateness = "0s"
min_rows = 50
"""


def _spec(*, prediction_type: str = "numerical") -> ReferenceSpec:
    return ReferenceSpec(model="m", numerical=("age",), categorical=("region", "flag"), prediction="prediction",
                         prediction_type=prediction_type, require_prediction=True, min_rows=1)


def _rows(n: int) -> list[tuple[str, str, float]]:
    """``n`` (region, flag, age) rows, every region and flag equally often."""
    cycle = itertools.cycle(itertools.product(REGIONS, FLAGS))
    ages = np.random.default_rng(3).normal(40, 8, n).round(1)
    return [(*next(cycle), float(a)) for a in ages]


def _write_reference(path: Path, rows: list[tuple[str, str, float]]) -> None:
    lines = ["region,flag,age,prediction"] + [f"{r},{f},{a},0.5" for r, f, a in rows]
    path.write_text("\n".join(lines) + "\n")


def test_categorical_cells_are_the_text_as_written(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text('region,flag,age,prediction\nNA,True,NA,0.1\n01,null,nan,0.2\n,None,,0.3\n"",N/A,4,0.4\n'
                 "#N/A,nan,5,0.5\n")
    cols = load_reference(p, _spec()).columns
    assert cols["region"].tolist() == ["NA", "01", None, None, "#N/A"]
    assert cols["flag"].tolist() == ["True", "null", "None", "N/A", "nan"]
    # a numerical column keeps its missing markers: NA, nan and empty are missing values
    assert np.isnan(cols["age"][:4]).tolist() == [True, True, True, False]
    assert cols["age"][3:].tolist() == [4.0, 5.0]


def test_a_class_prediction_column_is_text_too(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("region,flag,age,prediction\nNA,a,1,01\nNA,b,2,1\nNA,c,3,True\nNA,d,4,NA\n")
    cols = load_reference(p, _spec(prediction_type="categorical")).columns
    assert cols["prediction"].tolist() == ["01", "1", "True", "NA"]


def test_text_in_a_numerical_column_is_refused_naming_column_and_row(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("region,flag,age,prediction\nNA,a,1,0.1\nNA,a,forty,0.2\n")
    with pytest.raises(ReferenceError, match=r"column 'age' is numerical but row 2 holds 'forty'"):
        load_reference(p, _spec())


def test_parquet_keeps_its_own_types(tmp_path: Path) -> None:
    p = tmp_path / "r.parquet"
    pd.DataFrame({"region": ["NA", "01", None], "flag": [True, False, True], "age": [1.0, None, 3.0],
                  "prediction": [0.1, 0.2, 0.3]}).to_parquet(p, index=False)
    cols = load_reference(p, _spec()).columns
    assert cols["region"].tolist() == ["NA", "01", None]
    assert cols["flag"].tolist() == ["true", "false", "true"]  # a JSON true is "true" too


def test_a_live_stream_of_the_references_own_values_shows_no_drift_and_no_new_category(tmp_path: Path) -> None:
    """The decoder reads the messages' "NA", "01", "True" as those strings; the reference
    file holding the same text must give the same categories."""
    (tmp_path / "config.toml").write_text(CONFIG)
    _write_reference(tmp_path / "ref.csv", _rows(800))
    start = 1_795_000_000_000 - 1_795_000_000_000 % 60_000
    events = [
        orjson.dumps({"event_id": f"e{i}", "model": "m", "ts": start + i * 200, "prediction": 0.5,
                      "features": {"region": r, "flag": f, "age": a}})
        for i, (r, f, a) in enumerate(_rows(600))  # 2 full minutes, then a row that closes them
    ]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    res = run_replay(load_config(tmp_path / "config.toml"), tmp_path / "events.jsonl", tmp_path / "out")
    assert res.dead_letters == 0
    store = Store(tmp_path / "out" / "driftwarden.db", readonly=True)
    try:
        figs = store.query('SELECT window_id, "column", metric, value, drifted FROM metrics'
                           " WHERE \"column\" IN ('region', 'flag')")
    finally:
        store.close()
    assert {f["window_id"] for f in figs}, "no window was judged"
    new = [f for f in figs if f["metric"] == "new_category_share"]
    assert new and all(f["value"] == 0 for f in new), new
    missing = [f for f in figs if f["metric"] == "missing_share"]
    assert all(f["value"] == 0 for f in missing), missing
    drift = [f for f in figs if f["metric"] == "drift_score"]
    assert drift and not any(f["drifted"] for f in drift), drift


def _score_model(tmp_path: Path, **extra: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "s", "reference": str(tmp_path / "r.csv"),
                                       "features": {"numerical": ["x"]}, "performance": {"enabled": True},
                                       **extra})


def test_label_classes_01_and_1_stay_distinct_as_in_label_messages(tmp_path: Path) -> None:
    """A label column "01"/"1" was read as the numbers 1 and 1: one class, so a score model
    took no class set, and class_of_interest "01" was refused as none of the classes."""
    rows = [f"{i},{'01' if i % 3 else '1'},{0.9 if i % 3 else 0.1}" for i in range(60)]
    (tmp_path / "r.csv").write_text("x,label,prediction\n" + "\n".join(rows) + "\n")
    lr = prepare_labelled_reference(_score_model(tmp_path, class_of_interest="01"), tmp_path / "r.csv")
    assert lr.classes == frozenset({"01", "1"})
    # the label decoder's reading of the same labels in messages: both are classes
    assert class_label("01", "label", 100) in lr.classes and class_label(1, "label", 100) in lr.classes
    assert lr.figures  # the reference's own figures, with "01" the class of interest
    assert lr.labels is not None


def test_label_na_is_a_class_not_a_missing_label(tmp_path: Path) -> None:
    rows = [f"{i},{'NA' if i % 2 else 'EU'},{0.5}" for i in range(40)] + ["40,,0.5"]
    (tmp_path / "r.csv").write_text("x,label,prediction\n" + "\n".join(rows) + "\n")
    lr = prepare_labelled_reference(_score_model(tmp_path, class_of_interest="NA"), tmp_path / "r.csv")
    assert lr.classes == frozenset({"NA", "EU"})  # the empty cell is a missing label, not a class


def test_a_report_reads_the_reference_as_it_was_judged(tmp_path: Path) -> None:
    """The HTML report's reference columns: the same text categories as the verdicts'."""
    from monitor.web.reports import read_reference

    p = tmp_path / "r.csv"
    p.write_text("region,flag,age,prediction\nNA,True,NA,0.1\n01,,2.5,0.2\n")
    cols = read_reference(p, {"region": "s", "flag": "s", "age": "f"})
    assert cols["region"].tolist() == ["NA", "01"] and cols["flag"].tolist() == ["True", None]
    assert np.isnan(cols["age"][0]) and cols["age"][1] == 2.5


def test_whole_numbers_written_as_decimals_are_text_with_a_warning(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """pandas writes an integer column holding a missing value as 1.0, 2.0: kept as that
    text (a string "1.0" is a fine category), with a WARNING, as a message's 1 reads "1"."""
    p = tmp_path / "r.csv"
    p.write_text("region,flag,age,prediction\n1.0,a,1,0.1\n,b,2,0.2\n20.0,c,3,0.3\n")
    with caplog.at_level("WARNING", logger="driftwarden.references"):
        cols = load_reference(p, _spec()).columns
    assert cols["region"].tolist() == ["1.0", None, "20.0"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "model m: reference" in warned[0] and "column 'region' holds only whole numbers" in warned[0]
    assert "(it reads as '1')" in warned[0]
    caplog.clear()
    # class labels written so are the numbers they spell, as label messages' 0.0 and 1.0 are
    # the classes 0 and 1 (pandas writes a label column holding a missing label so): no warning
    (tmp_path / "s.csv").write_text("x,label,prediction\n" + "".join(f"{i},{i % 2}.0,0.5\n" for i in range(10)))
    with caplog.at_level("WARNING", logger="driftwarden.references"):
        assert prepare_labelled_reference(_score_model(tmp_path), tmp_path / "s.csv").classes == {"0", "1"}
    assert caplog.records == []
    p.write_text("region,flag,age,prediction\n1.0,a,1,0.1\nv2,b,2,0.2\n")  # text among them: no warning
    load_reference(p, _spec())
    assert caplog.records == []


def test_check_lists_the_decimal_wholes_warning(tmp_path: Path) -> None:
    """`driftwarden check` (``--pre-start`` too, which skips calibrating) shows a
    reference's loading WARNINGs as ``!`` lines: the column of 1.0, 2.0 read as that text
    used to reach only the daemon's log."""
    (tmp_path / "config.toml").write_text(CONFIG)
    lines = ["region,flag,age,prediction"] + [f"{i % 3}.0,{f},{a},0.5" for i, (_, f, a) in enumerate(_rows(60))]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n")
    warnings: list[str] = []
    assert check_references(load_config(tmp_path / "config.toml"), warnings, calibrate=False) == ["m 60 rows"]
    assert len(warnings) == 1 and "column 'region' holds only whole numbers written as decimals ('0.0')" in warnings[0]
