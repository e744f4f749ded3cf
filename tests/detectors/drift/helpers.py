from __future__ import annotations

import numpy as np

from detectors import ColumnSpec, column_drift, prepare_reference


def score(method: str, ref, cur, kind: str = "numerical", bins: str = "evidently") -> float:
    prepared = prepare_reference({"x": np.asarray(ref)}, [ColumnSpec("x", kind, method)], bins=bins)
    return column_drift(
        prepared, "x", np.asarray(cur, dtype=object if kind == "categorical" else float)
    ).score
