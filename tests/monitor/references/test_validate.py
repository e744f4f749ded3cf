"""What a reference must hold, checked by loading real files (CSV and Parquet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.config import parse_config
from monitor.references.load import ReferenceError, ReferenceSpec, load_reference

MODEL = """
[[models]]
name = "churn"
reference = "ref.csv"
{extra}
[models.features]
numerical = ["age", "charges"]
categorical = ["plan"]
[models.window]
min_rows = {min_rows}
[models.drift]
prediction = {prediction}
"""


def _spec(tmp_path: Path, *, min_rows: int = 3, prediction: bool = True, extra: str = "") -> ReferenceSpec:
    (tmp_path / "ref.csv").write_text("x\n1\n")  # the config only needs it to exist
    import tomllib

    data = tomllib.loads(MODEL.format(min_rows=min_rows, prediction=str(prediction).lower(), extra=extra))
    cfg = parse_config(data, base_dir=tmp_path)
    return ReferenceSpec.from_config(cfg.models[0])


def _write(tmp_path: Path, text: str, name: str = "r.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = "age,charges,plan,prediction\n40,70.5,pro,0.3\n41,,basic,0.4\n,80,,0.9\n"


def test_a_good_reference_loads_with_missing_values_as_missing(tmp_path: Path) -> None:
    ref = load_reference(_write(tmp_path, GOOD), _spec(tmp_path))
    assert ref.rows == 3
    assert np.array_equal(ref.columns["age"], [40, 41, np.nan], equal_nan=True)
    assert list(ref.columns["plan"]) == ["pro", "basic", None]
    assert np.array_equal(ref.columns["prediction"], [0.3, 0.4, 0.9])


def test_min_rows_defaults_to_the_window_min_rows_and_can_be_set(tmp_path: Path) -> None:
    assert _spec(tmp_path, min_rows=30).min_rows == 30
    assert _spec(tmp_path, min_rows=30, extra="reference_min_rows = 2").min_rows == 2
    path = _write(tmp_path, GOOD)
    with pytest.raises(ReferenceError) as e:
        load_reference(path, _spec(tmp_path, min_rows=4))
    assert e.value.problem.startswith("has 3 row(s); at least 4 are needed")
    assert load_reference(path, _spec(tmp_path, min_rows=4, extra="reference_min_rows = 3")).rows == 3


@pytest.mark.parametrize(("text", "column", "problem"), [
    ("age,plan,prediction\n1,a,0.1\n2,b,0.2\n3,c,0.3\n", "charges",
     "lacks the configured feature column(s) 'charges'; its columns: 'age', 'plan', 'prediction'"),
    ("age,charges,plan\n1,2,a\n2,3,b\n3,4,c\n", "prediction",
     "lacks the prediction column 'prediction' (needed for drift on the prediction;"
     " set models.drift.prediction = false to go without)"),
    ("age,charges,plan,prediction\n1,2,a,0.1\n2,x,b,0.2\n3,y,c,0.3\n", "charges",
     "column 'charges' is numerical but row 2 holds 'x' (2 such value(s))"),
    ("age,charges,plan,prediction\n1,2,a,0.1\n2,3,b,high\n3,4,c,0.3\n", "prediction",
     "column 'prediction' is numerical but row 2 holds 'high' (1 such value(s))"),
    ("age,charges,plan,prediction\n1,-inf,a,0.1\n2,3,b,0.2\n3,4,c,0.3\n", "charges",
     "column 'charges' is numerical but row 1 holds '-inf' (1 such value(s))"),
    ("age,charges,plan,prediction\n1,2,,0.1\n2,3,,0.2\n3,4,,0.3\n", "plan", "column 'plan' holds no values"),
    ("age,charges,plan,prediction\n,2,a,0.1\n,3,b,0.2\n,4,c,0.3\n", "age", "column 'age' holds no values"),
])
def test_each_problem_names_its_column(tmp_path: Path, text: str, column: str, problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ReferenceError) as e:
        load_reference(path, _spec(tmp_path))
    assert (e.value.column, e.value.problem) == (column, problem)
    assert str(e.value) == f"model churn: reference {path}: {problem}"


def test_a_missing_feature_column_is_named_with_what_the_file_holds(tmp_path: Path) -> None:
    """A semicolon-separated file reads as one column named by its whole header line: the
    message shows that header and names the separator, so the fix is plain; a wide file
    shows its first columns and its count."""
    spec = _spec(tmp_path)
    with pytest.raises(ReferenceError) as e:
        load_reference(_write(tmp_path, GOOD.replace(",", ";")), spec)
    assert e.value.problem == (
        "lacks the configured feature column(s) 'age', 'charges', 'plan';"
        " its columns: 'age;charges;plan;prediction' (a CSV reference must be comma-separated)"
    )
    wide = ",".join(f"c{i}" for i in range(20))
    with pytest.raises(ReferenceError) as e:
        load_reference(_write(tmp_path, wide + "\n" + ",".join("1" * 20) + "\n"), spec)
    assert e.value.problem.endswith("its columns: " + ", ".join(f"'c{i}'" for i in range(12)) + ", … (20 in all)")


def test_the_prediction_column_is_optional_without_prediction_drift(tmp_path: Path) -> None:
    path = _write(tmp_path, "age,charges,plan\n1,2,a\n2,3,b\n3,4,c\n")
    ref = load_reference(path, _spec(tmp_path, prediction=False))
    assert "prediction" not in ref.columns


def test_an_unreadable_file_is_a_reference_error_without_a_traceback(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with pytest.raises(ReferenceError) as e:
        load_reference(tmp_path / "gone.csv", spec)
    assert e.value.problem == "cannot be read: No such file or directory"
    bad = _write(tmp_path, "not parquet", "r.parquet")
    with pytest.raises(ReferenceError) as e:
        load_reference(bad, spec)
    assert e.value.problem.startswith("is not readable as PARQUET: ")
    assert str(bad) not in e.value.problem


def test_parquet_types_are_checked_too(tmp_path: Path) -> None:
    df = pd.DataFrame({"age": ["1", "2", "three"], "charges": [1.0, 2.0, 3.0], "plan": ["a", "b", "c"],
                       "prediction": [0.1, 0.2, 0.3]})
    path = tmp_path / "r.parquet"
    df.to_parquet(path)
    with pytest.raises(ReferenceError) as e:
        load_reference(path, _spec(tmp_path))
    assert e.value.problem == "column 'age' is numerical but row 3 holds 'three' (1 such value(s))"
    df["age"] = [1, 2, 3]
    df.to_parquet(path)
    assert load_reference(path, _spec(tmp_path)).rows == 3


def _rows(n: int) -> str:
    rng = np.random.default_rng(0)
    lines = ["age,charges,plan,prediction"]
    lines += [f"{a:.3f},{c:.3f},{p},0.5" for a, c, p in zip(rng.normal(40, 9, n), rng.normal(70, 20, n),
                                                             rng.choice(["pro", "basic"], n), strict=True)]
    return "\n".join(lines) + "\n"


def test_calibrated_thresholds_refuse_a_reference_too_small_to_resample(tmp_path: Path) -> None:
    from detectors.calibration import MIN_CALIBRATION_ROWS

    calibrated = '[models.drift]\nthresholds = "calibrated"\n'.join(MODEL.rsplit("[models.drift]\n", 1))
    import tomllib

    (tmp_path / "ref.csv").write_text("x\n1\n")
    cfg = parse_config(tomllib.loads(calibrated.format(min_rows=30, prediction="true", extra="")), base_dir=tmp_path)
    spec = ReferenceSpec.from_config(cfg.models[0])
    assert spec.calibration_min_rows == MIN_CALIBRATION_ROWS == 100
    small = _write(tmp_path, _rows(99))
    with pytest.raises(ReferenceError) as e:
        load_reference(small, spec)
    assert e.value.problem.startswith(
        'has 99 row(s); calibrated thresholds (drift.thresholds = "calibrated") need at least 100'
    )
    assert str(e.value).startswith("model churn: reference ")  # the model, for check / run / reload / callback
    assert load_reference(_write(tmp_path, _rows(100), "ok.csv"), spec).rows == 100
    # evidently thresholds: only min_rows applies
    assert _spec(tmp_path, min_rows=30).calibration_min_rows == 0
    assert load_reference(small, _spec(tmp_path, min_rows=30)).rows == 99


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_hash_names_the_rows_read_when_the_file_is_replaced_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The hash was taken after the rows were read: a file replaced in between got the new
    file's hash for the old rows, and the calibration cache kept the old rows' calibration
    under it for good. Then the file was hashed before and after the read, read again
    when they differed (three full reads at each start). Now one read gives the rows and
    the hash of the very bytes they were parsed from: a file replaced while the parser
    runs leaves both the old file's, and the file is parsed once."""
    import hashlib

    import pandas as pd

    from monitor.references.load import ReferenceSpec, load_reference

    path, new = tmp_path / f"ref.{fmt}", tmp_path / f"new.{fmt}"
    for p, n in ((path, 200), (new, 300)):
        frame = pd.DataFrame({"a": [float(i) for i in range(n)]})
        frame.to_csv(p, index=False) if fmt == "csv" else frame.to_parquet(p, index=False)
    old_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    parser = "read_csv" if fmt == "csv" else "read_parquet"
    real = getattr(pd, parser)
    calls = []

    def replaced_while_parsed(*args: object, **kw: object) -> object:
        calls.append(1)
        new.replace(path)  # the new reference lands while the old one is being parsed
        return real(*args, **kw)

    monkeypatch.setattr(pd, parser, replaced_while_parsed)
    spec = ReferenceSpec(model="m", numerical=("a",), categorical=(), prediction="p", prediction_type="numerical",
                         require_prediction=False, min_rows=1)
    ref = load_reference(path, spec)
    assert (ref.rows, ref.sha256, len(calls)) == (200, old_hash, 1)
    monkeypatch.setattr(pd, parser, real)
    assert load_reference(path, spec).rows == 300  # the new file, next time
