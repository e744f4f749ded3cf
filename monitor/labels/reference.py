"""What the label join prepares once per reference: label drift, reference figures, calibration.

If the reference file holds the ground truth (the model's ``label`` column), it
gives three things, each computed once per reference, never per window:

- the reference labels prepared for the ``label_drift`` test;
- the reference's own performance figures (when it also holds the prediction
  column), so relative rules (``accuracy < 0.95 x reference``) work;
- for classifiers that publish a score, the isotonic calibrator of the
  estimated (CBPE) figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detectors import ColumnSpec, PreparedReference, prepare_reference
from detectors.estimation import Calibrator, fit_calibrator
from monitor.config import ModelConfig
from monitor.references.load import (
    ReferenceError,
    categorical_values,
    file_format,
    read_frame,
    text_number,
)
from storage.records import DATASET


@dataclass(frozen=True)
class LabelledReference:
    """The label-related parts of one model's reference (all optional)."""

    #: the reference's labels, prepared for the label drift test (None: no label column)
    labels: PreparedReference | None = None
    #: the reference's own performance figures by (column, metric)
    figures: dict[tuple[str, str], float] = field(default_factory=dict)
    calibrator: Calibrator | None = None
    rows: int = 0
    #: a score (binary) model's label classes in the reference (None: no labels, one class
    #: only, or not such a model); labels of other classes are dead letters, see
    #: ``LabelDecoder.set_classes``
    classes: frozenset[str] | None = None
    #: worth a warning, not a failure: the label column the config names explicitly
    #: is not in the file, so none of the above exists (see :func:`missing_label_warning`)
    warning: str | None = None


def missing_label_warning(m: ModelConfig, path: Path) -> str | None:
    """Why a reference without ``m``'s label column gives no label figures, when the
    config names that column itself (``models.label`` set); None when it does not (the
    default ``"label"`` is optional: a reference without labels is a normal case).

    A misspelt ``label`` would otherwise pass every check and silently give no label
    drift, no estimated performance and no reference figures."""
    if "label" not in m.model_fields_set:
        return None
    return (
        f"model {m.name}: reference {path} has no column {m.label!r} (models.label): no label drift,"
        " estimated performance or reference figures; name a column the file holds, add the labels to it,"
        " or drop models.label"
    )


def empty_label_warning(m: ModelConfig, path: Path) -> str:
    """Why a reference whose label column holds no label gives no label figures."""
    what = "number" if m.task == "regression" else "value"
    return (
        f"model {m.name}: reference {path} has column {m.label!r} (models.label) but not one {what} in it:"
        " no label drift, estimated performance or reference figures; fill in the labels, or drop the column"
    )


def read_label_columns(m: ModelConfig, path: Path) -> dict[str, np.ndarray]:
    """``m``'s label and prediction columns in the reference file, where present (raw values).

    A CSV's class labels and class predictions are text as written (``"01"`` and ``"1"``,
    ``"NA"``, ``"True"`` stay distinct classes, as in label and prediction messages; an
    empty cell is missing); regression labels and scores are numbers (see
    :func:`monitor.references.load.csv_options`)."""
    text, numbers = [], []
    (numbers if m.task == "regression" else text).append(m.label)
    (numbers if m.prediction_type == "numerical" else text).append(m.prediction)
    df = read_frame(path, text=text, numbers=numbers)
    return {c: df[c].to_numpy() for c in (m.label, m.prediction) if c in df.columns}


def class_names(values: np.ndarray) -> np.ndarray:
    """Labels as class names, the way label events are read (``1``, ``1.0`` and ``"1"`` are ``"1"``)."""
    return categorical_values(np.asarray(values, dtype=object))


def numbers(values: np.ndarray) -> np.ndarray:
    import pandas as pd  # noqa: PLC0415

    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def prepare_labelled_reference(m: ModelConfig, path: Path) -> LabelledReference:
    """Read and prepare the label-related parts of ``m``'s reference at ``path``.

    A file without the label column gives an empty :class:`LabelledReference`, with a
    ``warning`` for the caller to show when the config named that column itself."""
    from monitor.labels.figures import reference_figures  # noqa: PLC0415

    cols = read_label_columns(m, path)
    if m.label not in cols:
        return LabelledReference(warning=missing_label_warning(m, path))
    raw = cols[m.label]
    if m.task == "regression":
        labels = numbers(raw)
        kind = "numerical"
    else:
        if file_format(path) == "csv":
            # a CSV cell has no type: one that spells a JSON number is that number (so
            # 1.0, as pandas writes an integer column holding a missing value, is the
            # class 1, as a label message's 1.0 is); any other stays text (01, NA, True)
            raw = np.array([text_number(v) if type(v) is str else v for v in raw.tolist()], dtype=object)
        labels = class_names(raw)
        kind = "categorical"
    seen = {v for v in labels.tolist() if v is not None} if m.task == "classification" else set()
    if not (seen if m.task == "classification" else np.isfinite(labels).any()):
        # prepared, an empty column made a label drift that is never defined: a rule on it
        # was accepted and never fired
        return LabelledReference(warning=empty_label_warning(m, path))
    if m.task == "classification" and m.class_of_interest is not None:
        if seen and str(m.class_of_interest) not in seen:
            # else precision, recall and F1 would be 0 in every window, silently
            shown = ", ".join(sorted(seen)[:5]) + (", ..." if len(seen) > 5 else "")
            raise ReferenceError(
                path, f"models.class_of_interest = {m.class_of_interest!r} is none of the classes in"
                f" column {m.label!r} ({shown}): set class_of_interest to one of them", m.label,
            )
    prepared = prepare_reference({m.label: labels}, [ColumnSpec(name=m.label, kind=kind)])
    figures: dict[tuple[str, str], float] = {}
    calibrator = None
    if m.prediction in cols:
        pred = numbers(cols[m.prediction]) if m.prediction_type == "numerical" else class_names(cols[m.prediction])
        figures = {(DATASET, k): v for k, v in reference_figures(m, pred, labels).items()}
        if m.task == "classification" and m.prediction_type == "numerical":
            ok = np.isfinite(pred) & np.array([v is not None for v in labels], dtype=bool)
            if ok.sum() >= 2:
                calibrator = fit_calibrator(pred[ok], labels[ok] == str(m.class_of_interest))
    # a reference holding one class only names no negative one: then any label goes
    binary = m.task == "classification" and m.prediction_type == "numerical" and len(seen) >= 2
    return LabelledReference(prepared, figures, calibrator, int(len(labels)),
                             classes=frozenset(seen) if binary else None)
