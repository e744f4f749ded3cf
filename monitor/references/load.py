"""Loading reference data (CSV or Parquet) into the column arrays ``detectors`` expects.

Runs once per reference (at start-up, in ``driftwarden check`` and when a new
reference is registered), never per window, so pandas is fine here. Every load
validates (see :mod:`monitor.references.validate`): a reference that loads is fit
to judge windows against.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

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

__all__ = ["MISSING_NUMBER_CELLS", "ReferenceData", "ReferenceError", "ReferenceSpec", "Table", "categorical_values",
           "csv_options", "load_reference", "read_frame", "read_table", "text_number",
           "warn_decimal_wholes"]

log = logging.getLogger("driftwarden.references")

Format = Literal["csv", "parquet"]

#: the CSV cells of a numerical column that are a missing value, as an empty one is
#: (pandas' own list, spelt out so it is ours and documented: README, reference files).
#: A text column (categorical feature, class label) has one missing cell only, the empty one.
MISSING_NUMBER_CELLS: tuple[str, ...] = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)


@dataclass(frozen=True)
class ReferenceData:
    path: Path
    sha256: str
    rows: int
    columns: dict[str, np.ndarray]


#: a JSON number as text, white space around it allowed (no ``nan``, ``inf``, ``1_000``,
#: hex, which ``float()`` accepts); groups: the fraction and the exponent (neither: integral)
_NUMBER = re.compile(r"\s*-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?\s*")
_match_number = _NUMBER.fullmatch
_INT64 = 1 << 63
_isfinite = math.isfinite


def text_number(text: str) -> Any:
    """A CSV cell as a JSON number when it is one, white space around it aside (int when
    integral text, float otherwise, float beyond int64), else the text unchanged (including
    ``1e999``: not finite). One regular-expression match per cell (``int`` and ``float``
    skip the same white space as ``\\s``: :func:`str.isspace`). The replay reads a CSV's
    numbers so, and a reference's class labels (see :func:`monitor.labels.reference.class_names`)."""
    m = _match_number(text)
    if m is None:
        return text
    if m.lastindex is None:
        n = int(text)
        return n if -_INT64 <= n < _INT64 else float(n)
    v = float(text)
    return v if _isfinite(v) else text


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


@dataclass(frozen=True)
class Table:
    """A reference file as read: its rows, and the SHA-256 (hex) of the bytes they were
    parsed from."""

    frame: pd.DataFrame
    sha256: str


class _Hashing(io.RawIOBase):
    """A binary file read through, hashing every byte as it is read (reads only go on:
    the file is never sought back, so each byte is hashed once, in order)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer) or 0
        self.hash.update(memoryview(buffer)[:n])
        return n


def csv_options(text: Collection[str] = (), numbers: Collection[str] = ()) -> dict[str, Any]:
    """``pandas.read_csv`` keyword arguments reading ``text`` columns as the decoder reads
    a JSON string, and ``numbers`` columns as numbers.

    A ``text`` cell is kept exactly as written (``NA``, ``null``, ``01``, ``True``,
    ``1.0`` stay those strings, as a live message's ``"NA"`` or ``"01"`` does); only an
    empty cell is missing. A ``numbers`` cell is a number, or missing when empty or one
    of :data:`MISSING_NUMBER_CELLS` (any other text is left for
    :func:`~monitor.references.validate.numerical_column` to refuse, naming column and
    row). A column named in neither is read as raw text, no cell missing (nothing reads
    it); a column named in both is text. No columns named: pandas' own guessing (``{}``).
    """
    if not text and not numbers:
        return {}
    na: dict[str, list[str]] = {c: list(MISSING_NUMBER_CELLS) for c in numbers}
    na.update({c: [""] for c in text})
    return {"keep_default_na": False, "na_values": na, "dtype": {c: object for c in text}}


#: a whole number written as a decimal (``1.0``, ``-3.00``): how a float column writes integers
_DECIMAL_WHOLE = re.compile(r"-?\d+\.0+")


def warn_decimal_wholes(path: Path, column: str, values: np.ndarray, model: str | None = None) -> bool:
    """Log a WARNING (and return True) when every value of a CSV's text column ``values``
    (``str``, ``None`` for missing) is a whole number written as a decimal (``1.0``).

    That is how pandas writes an integer column holding a missing value; the cells are
    read as written, ``"1.0"``, while a message's number ``1`` is read as ``"1"``: every
    live value would be a new category (a new class). Reading ``"1.0"`` as ``"1"`` would
    guess; a string ``"1.0"`` is a fine category, so this only warns. Costs one look at
    the first value unless that one is such a number.
    """
    first = next((v for v in values.tolist() if v is not None), None)
    if not isinstance(first, str) or not _DECIMAL_WHOLE.fullmatch(first):
        return False
    if not all(_DECIMAL_WHOLE.fullmatch(v) for v in values.tolist() if v is not None):
        return False
    head = f"model {model}: " if model else ""
    whole = first.split(".")[0]
    log.warning(
        "%sreference %s: column %r holds only whole numbers written as decimals (%r): they are read as"
        " that text, which a message's %s is not (it reads as %r); write them as integers, or use Parquet",
        head, path, column, first, whole, whole,
    )
    return True


def read_table(path: Path, fmt: Format | None = None, *, max_cells: int | None = None,
               text: Collection[str] = (), numbers: Collection[str] = ()) -> Table:
    """The file's rows and the hash of the bytes they came from, from one read of it.

    The file is opened once and each byte read once: a CSV is parsed as it streams
    through a hashing reader (read on to the end after the parser stops, so the hash is
    the whole file's); a Parquet file, which the parser reads out of order (footer first),
    is read into memory (its compressed size), hashed and parsed from there. So the hash
    names exactly the bytes the rows were parsed from, by construction: a file replaced
    while it is read (a new reference copied in place at start-up) cannot give the new
    file's hash to the old rows; the open file is the old one to its end, and the new
    one is read next time (a reload or restart).

    ``max_cells``: a file holding more values (rows times columns) is refused before it
    is read whole (Parquet: from its metadata, as a few KB can hold millions of equal
    values; CSV: read up to the limit). Any failure is a :class:`ReferenceError`; the
    parsers get an open file, not the path, so their messages never carry the path.

    ``text``, ``numbers``: how a CSV's columns are typed (:func:`csv_options`); a Parquet
    file keeps the types it was written with.
    """
    fmt = fmt or file_format(path)
    try:
        with open(path, "rb") as f:
            if fmt == "parquet":
                data = f.read()
                return Table(_parquet(path, io.BytesIO(data), max_cells), hashlib.sha256(data).hexdigest())
            hashing = _Hashing(f)
            stream = io.BufferedReader(hashing, 1 << 20)
            frame = _csv(path, stream, max_cells, csv_options(text, numbers))
            while stream.read(1 << 20):  # whatever the parser left unread: the hash is the file's
                pass
            return Table(frame, hashing.hash.hexdigest())
    except ReferenceError:
        raise
    except OSError as exc:
        raise ReferenceError(path, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means "not a readable table"
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ReferenceError(path, f"is not readable as {fmt.upper()}: {reason}") from None


def read_frame(path: Path, fmt: Format | None = None, *, max_cells: int | None = None,
               text: Collection[str] = (), numbers: Collection[str] = ()) -> pd.DataFrame:
    """The file as a DataFrame (:func:`read_table` without the hash)."""
    return read_table(path, fmt, max_cells=max_cells, text=text, numbers=numbers).frame


def _too_many(path: Path, what: str, max_cells: int) -> ReferenceError:
    return ReferenceError(path, f"holds {what}, more than the {max_cells} values an upload may hold"
                                " (daemon.max_reference_bytes / 4)")


def _parquet(path: Path, f: BinaryIO, max_cells: int | None) -> pd.DataFrame:
    import pandas as pd  # noqa: PLC0415 - kept off the CLI's import path

    if max_cells is not None:
        import pyarrow.parquet as pq  # noqa: PLC0415

        meta = pq.ParquetFile(f).metadata
        rows, cols = meta.num_rows, meta.num_columns
        if rows * cols > max_cells:
            raise _too_many(path, f"{rows} rows x {cols} columns", max_cells)
        f.seek(0)
    return pd.read_parquet(f)


def _csv(path: Path, f: BinaryIO, max_cells: int | None, options: dict[str, Any]) -> pd.DataFrame:
    """A CSV read front to back once (``options``: see :func:`csv_options`); with
    ``max_cells``, at most that many values."""
    import pandas as pd  # noqa: PLC0415

    if max_cells is None:
        return pd.read_csv(f, **options)
    with pd.read_csv(f, iterator=True, **options) as reader:
        header = reader.read(0)  # the columns, before any row
        cols = len(header.columns)
        limit = max(1, max_cells // max(1, cols))
        try:
            df = reader.read(limit + 1)
        except StopIteration:  # a header and no row
            return header
    if len(df) > limit:
        raise _too_many(path, f"more than {limit} rows x {cols} columns", max_cells)
    return df


def load_reference(
    path: Path, spec: ReferenceSpec, *, fmt: Format | None = None, max_cells: int | None = None
) -> ReferenceData:
    """Read and validate a reference; numerical columns become float64 (NaN = missing),
    categorical ones text as the decoder reads it (a CSV's cells as written, empty =
    missing: see :func:`csv_options`).

    ``fmt`` overrides the format the suffix implies (uploads land in a temp file);
    ``max_cells``: see :func:`read_table` (uploads).
    Raises :class:`ReferenceError` naming the file and the column.
    """
    try:
        return _load(path, spec, fmt, max_cells)
    except ReferenceError as exc:
        exc.model = spec.model
        raise


def _load(path: Path, spec: ReferenceSpec, fmt: Format | None, max_cells: int | None = None) -> ReferenceData:
    import pandas as pd  # noqa: PLC0415

    text, numbers = list(spec.categorical), list(spec.numerical)
    (numbers if spec.prediction_type == "numerical" else text).append(spec.prediction)
    # the hash is of the bytes parsed: see there
    table = read_table(path, fmt, max_cells=max_cells, text=text, numbers=numbers)
    df, sha256 = table.frame, table.sha256
    check_shape(path, [str(c) for c in df.columns], len(df), spec)
    cols: dict[str, np.ndarray] = {}
    for c in spec.numerical:
        cols[c] = numerical_column(path, df, c)
        check_not_empty(path, c, np.isnan(cols[c]))
    csv = (fmt or file_format(path)) == "csv"
    for c in spec.categorical:
        cols[c] = categorical_values(df[c].to_numpy(dtype=object))
        check_not_empty(path, c, pd.isna(cols[c]).astype(bool))
        if csv:
            warn_decimal_wholes(path, c, cols[c], spec.model)
    pred = spec.prediction
    if pred in df.columns:
        if spec.prediction_type == "numerical":
            if spec.require_prediction:
                cols[pred] = numerical_column(path, df, pred)
            else:
                cols[pred] = pd.to_numeric(df[pred], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            cols[pred] = categorical_values(df[pred].to_numpy(dtype=object))
            if csv:
                warn_decimal_wholes(path, pred, cols[pred], spec.model)
        if spec.require_prediction:
            check_not_empty(path, pred, pd.isna(cols[pred]).astype(bool))
    return ReferenceData(path=path, sha256=sha256, rows=len(df), columns=cols)
