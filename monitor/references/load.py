"""Loading reference data (CSV or Parquet) into the column arrays ``detectors`` expects.

Runs once per reference (at start-up and when a new reference is registered),
never per window, so pandas is fine here.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.ingest.schema import ModelSchema


class ReferenceError(ValueError):
    """The reference file is unreadable or lacks a configured column."""


@dataclass(frozen=True)
class ReferenceData:
    path: Path
    sha256: str
    rows: int
    columns: dict[str, np.ndarray]


def categorical_values(values: np.ndarray) -> np.ndarray:
    """Categories as ``str`` (``None`` for missing), matching how the decoder reads JSON.

    Integral floats (a pandas int column with NaN) become ``"1"`` not ``"1.0"``,
    booleans ``"true"``/``"false"``.
    """
    out = np.empty(values.shape[0], dtype=object)
    for i, v in enumerate(values.tolist()):
        if v is None or (isinstance(v, float) and v != v):
            out[i] = None
        elif isinstance(v, bool):
            out[i] = "true" if v else "false"
        elif isinstance(v, float) and v.is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def load_reference(path: Path, schema: ModelSchema, prediction: str, *, require_prediction: bool = False) -> ReferenceData:
    """Read a reference file; numerical columns become float64 (NaN = missing)."""
    import pandas as pd  # noqa: PLC0415 - kept off the CLI's import path

    try:
        raw = path.read_bytes()
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(io.BytesIO(raw))
        else:
            df = pd.read_csv(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001
        raise ReferenceError(f"cannot read reference {path}: {exc}") from exc
    missing = [c for c in schema.features if c not in df.columns]
    if missing:
        raise ReferenceError(f"reference {path} lacks column(s): {', '.join(missing)}")
    cols: dict[str, np.ndarray] = {}
    for c in schema.numerical:
        try:
            cols[c] = pd.to_numeric(df[c], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError) as exc:
            raise ReferenceError(f"reference {path}: column {c} is not numerical: {exc}") from exc
    for c in schema.categorical:
        cols[c] = categorical_values(df[c].to_numpy(dtype=object))
    if prediction in df.columns:
        if schema.prediction_type == "numerical":
            cols[prediction] = pd.to_numeric(df[prediction], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            cols[prediction] = categorical_values(df[prediction].to_numpy(dtype=object))
    elif require_prediction:
        raise ReferenceError(f"reference {path} lacks the prediction column {prediction}")
    return ReferenceData(path=path, sha256=hashlib.sha256(raw).hexdigest(), rows=len(df), columns=cols)
