"""What Evidently itself outputs, for parity tests (imports evidently lazily)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd


def _series(values: Any, kind: str) -> pd.Series:
    if kind == "numerical":
        return pd.Series(np.asarray(values, dtype=np.float64))
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def evidently_column(
    ref: Any, cur: Any, kind: str, method: str | None = None, threshold: float | None = None
) -> tuple[str, float, bool]:
    """(test name, score, drifted) from Evidently's per-column code path.

    This is what ``get_one_column_drift`` (used by ``ValueDrift`` in
    ``DataDriftPreset``) does: replace ±inf by NaN, drop NaN, pick the test
    (``get_stattest``) and call it with the threshold.
    """
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    r = _series(ref, kind).replace([-np.inf, np.inf], np.nan).dropna()
    c = _series(cur, kind).replace([-np.inf, np.inf], np.nan).dropna()
    ctype = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    test = get_stattest(r, c, ctype, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = test(r, c, ctype, threshold)
    return test.name, float(res.drift_score), bool(res.drifted)


def evidently_report(
    ref: dict[str, Any], cur: dict[str, Any], kinds: dict[str, str], drift_share: float = 0.5
) -> tuple[dict[str, float], float, float]:
    """Per-column scores, drifted count and share from ``Report([DataDriftPreset()])``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [k for k, v in kinds.items() if v == "numerical"]
    cat = [k for k, v in kinds.items() if v == "categorical"]
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    rdf = pd.DataFrame({k: _series(v, kinds[k]) for k, v in ref.items()})
    cdf = pd.DataFrame({k: _series(v, kinds[k]) for k, v in cur.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snap = Report([DataDriftPreset(drift_share=drift_share)]).run(
            Dataset.from_pandas(cdf, data_definition=dd),
            Dataset.from_pandas(rdf, data_definition=dd),
        )
    scores: dict[str, float] = {}
    count = share = float("nan")
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            count, share = m["value"]["count"], m["value"]["share"]
        elif cfg["type"].endswith("ValueDrift"):
            scores[cfg["column"]] = float(m["value"])
    return scores, count, share
