"""Loading reference data (CSV or Parquet) into the column arrays ``detectors`` expects.

Runs once per reference (at start-up, in ``driftwarden check`` and when a new
reference is registered), never per window, so pandas is fine here. Every load
validates (see :mod:`monitor.references.validate`): a reference that loads is fit
to judge windows against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from monitor.references.validate import (
    ReferenceError,
    ReferenceSpec,
    check_not_empty,
    check_shape,
    numerical_column,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReferenceData", "ReferenceError", "ReferenceSpec", "categorical_values", "load_reference"]

Format = Literal["csv", "parquet"]


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
    items = values.tolist()
    kinds = set(map(type, items))
    if kinds <= {str, float, type(None)}:
        # the usual text column (NaN or None where a cell is empty): one C-level pass
        out[:] = items
        if float in kinds:
            floats = np.fromiter((type(v) is float for v in items), dtype=bool, count=len(items))
            if any(v == v for v, f in zip(items, floats.tolist(), strict=True) if f):
                return _categorical_slow(items, out)  # real numbers among the text
            out[floats] = None
        return out
    return _categorical_slow(items, out)


def _categorical_slow(items: list[Any], out: np.ndarray) -> np.ndarray:
    for i, v in enumerate(items):
        if v is None or (isinstance(v, float) and v != v):
            out[i] = None
        elif isinstance(v, bool):
            out[i] = "true" if v else "false"
        elif isinstance(v, float) and v.is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def file_format(path: Path) -> Format:
    """``parquet`` for ``.parquet``/``.pq``, else ``csv``."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_frame(path: Path, fmt: Format | None = None, *, max_cells: int | None = None) -> pd.DataFrame:
    """The file as a DataFrame; any parser failure is a :class:`ReferenceError`.

    The parser gets an open file, not the path, so its messages never carry the path.
    ``max_cells``: a file holding more values (rows times columns) is refused before it
    is read whole (Parquet: from its metadata; a few KB can hold millions of equal
    values; CSV: read up to the limit).
    """
    import pandas as pd  # noqa: PLC0415 - kept off the CLI's import path

    fmt = fmt or file_format(path)
    try:
        with open(path, "rb") as f:
            if max_cells is None:
                return pd.read_parquet(f) if fmt == "parquet" else pd.read_csv(f)
            return _read_bounded(path, f, fmt, max_cells)
    except ReferenceError:
        raise
    except OSError as exc:
        raise ReferenceError(path, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means "not a readable table"
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ReferenceError(path, f"is not readable as {fmt.upper()}: {text}") from None


def _read_bounded(path: Path, f: Any, fmt: Format, max_cells: int) -> pd.DataFrame:
    """:func:`read_frame` of at most ``max_cells`` values, or :class:`ReferenceError`."""
    import pandas as pd  # noqa: PLC0415

    if fmt == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        meta = pq.ParquetFile(f).metadata
        rows, cols = meta.num_rows, meta.num_columns
        if rows * cols > max_cells:
            raise ReferenceError(path, f"holds {rows} rows x {cols} columns, more than the {max_cells} values"
                                       " an upload may hold (daemon.max_reference_bytes / 4)")
        f.seek(0)
        return pd.read_parquet(f)
    cols = len(pd.read_csv(f, nrows=0).columns)
    f.seek(0)
    limit = max(1, max_cells // max(1, cols))
    df = pd.read_csv(f, nrows=limit + 1)
    if len(df) > limit:
        raise ReferenceError(path, f"holds more than {limit} rows x {cols} columns, more than the {max_cells}"
                                   " values an upload may hold (daemon.max_reference_bytes / 4)")
    return df


def load_reference(
    path: Path, spec: ReferenceSpec, *, fmt: Format | None = None, max_cells: int | None = None
) -> ReferenceData:
    """Read and validate a reference; numerical columns become float64 (NaN = missing).

    ``fmt`` overrides the format the suffix implies (uploads land in a temp file);
    ``max_cells``: see :func:`read_frame` (uploads).
    Raises :class:`ReferenceError` naming the file and the column.
    """
    try:
        return _load(path, spec, fmt, max_cells)
    except ReferenceError as exc:
        exc.model = spec.model
        raise


def _load(path: Path, spec: ReferenceSpec, fmt: Format | None, max_cells: int | None = None) -> ReferenceData:
    import pandas as pd  # noqa: PLC0415

    # the hash names the rows read: taken before and after reading, a file replaced in
    # between (a new reference copied in place while the daemon starts) is read again
    for _ in range(3):
        try:
            before = sha256_of(path)
        except OSError:
            before = None  # read_frame says why it cannot be read
        df = read_frame(path, fmt, max_cells=max_cells)
        try:
            sha256 = sha256_of(path)
        except OSError as exc:  # gone or unreadable once read
            raise ReferenceError(path, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
        if sha256 == before:
            break
    else:
        raise ReferenceError(path, "changed three times while it was read; try again once it is in place")
    check_shape(path, [str(c) for c in df.columns], len(df), spec)
    cols: dict[str, np.ndarray] = {}
    for c in spec.numerical:
        cols[c] = numerical_column(path, df, c)
        check_not_empty(path, c, np.isnan(cols[c]))
    for c in spec.categorical:
        cols[c] = categorical_values(df[c].to_numpy(dtype=object))
        check_not_empty(path, c, pd.isna(cols[c]).astype(bool))
    pred = spec.prediction
    if pred in df.columns:
        if spec.prediction_type == "numerical":
            if spec.require_prediction:
                cols[pred] = numerical_column(path, df, pred)
            else:
                cols[pred] = pd.to_numeric(df[pred], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            cols[pred] = categorical_values(df[pred].to_numpy(dtype=object))
        if spec.require_prediction:
            check_not_empty(path, pred, pd.isna(cols[pred]).astype(bool))
    return ReferenceData(path=path, sha256=sha256, rows=len(df), columns=cols)
