"""What a reference must hold before any window is judged against it.

A reference is checked wherever it enters: the configured file at start-up and in
``driftwarden check``, and every upload to the retraining callback. It must

- be readable as CSV or Parquet;
- have at least :attr:`ReferenceSpec.min_rows` rows (``models.reference_min_rows``,
  by default the window's ``min_rows``; see ``ModelConfig.min_reference_rows``):
  a 0-row reference silently makes every window "no drift", a 1-row one "drift";
  with ``drift.thresholds = "calibrated"`` also at least
  :data:`detectors.calibration.MIN_CALIBRATION_ROWS` (calibration resamples it);
- hold every configured feature column, and the prediction column when drift on
  the prediction is enabled (``models.drift.prediction``);
- hold, in every numerical column, numbers only: an empty cell is a missing value,
  anything else that is not a finite number is refused with the column, the row
  (1 = the first data row) and the value;
- hold at least one value in every feature column, and in the prediction column
  when it is needed (an all-empty column has no distribution to compare with).

Failures raise :class:`ReferenceError`; its ``problem`` names the column but never
the file's path, so the HTTP API can return it to a client as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from monitor.config import ModelConfig

#: characters of an offending value quoted in a message
_SHOW = 40
#: columns of the file named when a configured one is missing
_SHOW_COLUMNS = 12


class ReferenceError(ValueError):
    """The reference is unreadable, too small, lacks a column or has a badly typed one.

    ``problem`` is the reason without the file's path (safe to show an HTTP client);
    ``column`` the offending column, if one; ``str()`` names the file too.
    """

    def __init__(self, path: Path | str, problem: str, column: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.column = column
        #: the model whose reference this is, when known (set by ``load_reference``)
        self.model: str | None = None
        super().__init__(problem)

    def __str__(self) -> str:
        head = f"model {self.model}: " if self.model else ""
        return f"{head}reference {self.path}: {self.problem}"


@dataclass(frozen=True, slots=True)
class ReferenceSpec:
    """What one model needs of its reference, derived once from the config."""

    model: str
    numerical: tuple[str, ...]
    categorical: tuple[str, ...]
    prediction: str
    prediction_type: str
    #: the prediction column must be present (drift on the prediction is enabled)
    require_prediction: bool
    min_rows: int
    #: rows calibrated thresholds need (``drift.thresholds = "calibrated"``; 0: not calibrated)
    calibration_min_rows: int = 0

    @classmethod
    def from_config(cls, m: ModelConfig) -> ReferenceSpec:
        calibration_min_rows = 0
        if m.drift.thresholds == "calibrated":
            from detectors.calibration import MIN_CALIBRATION_ROWS  # noqa: PLC0415 - off the CLI's import path

            calibration_min_rows = MIN_CALIBRATION_ROWS
        return cls(
            model=m.name,
            numerical=tuple(m.features.numerical),
            categorical=tuple(m.features.categorical),
            prediction=m.prediction,
            prediction_type=m.prediction_type,
            require_prediction=m.drift.prediction,
            min_rows=m.min_reference_rows,
            calibration_min_rows=calibration_min_rows,
        )

    @property
    def features(self) -> tuple[str, ...]:
        return self.numerical + self.categorical


def _show(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "…")


def file_columns(columns: list[str]) -> str:
    """What a reference lacking a configured column holds instead, for its message.

    The first :data:`_SHOW_COLUMNS` column names, each quoted and cut as :func:`_show`
    does, then how many there are in all; no columns at all says so. A single column
    whose name holds ``;`` or a tab is a file separated by that character, which is
    not read as CSV (comma-separated): the text then says so.
    """
    if not columns:
        return "it has no columns"
    shown = ", ".join(_show(c) for c in columns[:_SHOW_COLUMNS])
    if len(columns) > _SHOW_COLUMNS:
        shown += f", … ({len(columns)} in all)"
    text = f"its columns: {shown}"
    if len(columns) == 1 and (";" in columns[0] or "\t" in columns[0]):
        text += " (a CSV reference must be comma-separated)"
    return text


def check_shape(path: Path, columns: list[str], rows: int, spec: ReferenceSpec) -> None:
    """Every needed column is present and there are enough rows.

    A missing feature column is named together with the columns the file does hold
    (:func:`file_columns`): a misspelt header, another separator or a file of another
    model show at once."""
    have = set(columns)
    missing = [c for c in spec.features if c not in have]
    if missing:
        raise ReferenceError(
            path,
            f"lacks the configured feature column(s) {', '.join(_show(c) for c in missing)};"
            f" {file_columns(columns)}",
            column=missing[0],
        )
    if spec.require_prediction and spec.prediction not in have:
        raise ReferenceError(
            path,
            f"lacks the prediction column {_show(spec.prediction)}"
            " (needed for drift on the prediction; set models.drift.prediction = false to go without)",
            column=spec.prediction,
        )
    if rows < spec.min_rows:
        raise ReferenceError(
            path,
            f"has {rows} row(s); at least {spec.min_rows} are needed"
            " (models.reference_min_rows, by default the window's min_rows)",
        )
    if rows < spec.calibration_min_rows:
        raise ReferenceError(
            path,
            f"has {rows} row(s); calibrated thresholds (drift.thresholds = \"calibrated\") need at"
            f" least {spec.calibration_min_rows}: resampling a smaller reference gives thresholds"
            " that miss alpha_column many times over (use a larger reference or thresholds = \"evidently\")",
        )


def numerical_column(path: Path, df: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` as float64 (NaN = missing); refuses text and non-finite numbers."""
    import pandas as pd  # noqa: PLC0415 - kept off the CLI's import path

    raw = df[column]
    if raw.dtype.kind in "fiu":
        # already numbers (the usual case): only infinities can be wrong
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        present = ~np.isnan(values)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        present = raw.notna().to_numpy()
    if raw.dtype == object:
        # an empty or blank cell is a missing value, not a type error
        present &= (raw.astype(str).str.strip() != "").to_numpy()
    bad = present & ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ReferenceError(
            path,
            f"column {_show(column)} is numerical but row {i + 1} holds {_show(raw.iloc[i])}"
            f" ({int(bad.sum())} such value(s))",
            column=column,
        )
    return values


def check_not_empty(path: Path, column: str, missing: np.ndarray) -> None:
    """A feature (or needed prediction) column must hold at least one value."""
    if missing.size and missing.all():
        raise ReferenceError(path, f"column {_show(column)} holds no values", column=column)
