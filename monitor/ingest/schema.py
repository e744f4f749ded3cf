"""What the daemon expects of each model's messages, derived once from the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from monitor.config import ModelConfig

#: the column of :class:`monitor.ingest.batch.ColumnBatch` holding the latency field
#: (a name no feature can have: config names never hold a NUL)
LATENCY_COLUMN = "\x00latency"


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """Field names and column kinds of one model, as the decoder and pipeline need them."""

    name: str
    layout: str
    numerical: tuple[str, ...]
    categorical: tuple[str, ...]
    prediction_type: str
    segments: tuple[str, ...]
    f_event_id: str
    f_version: str
    f_ts: str
    f_features: str
    f_prediction: str
    f_segment: str
    f_label: str
    #: longer event ids are dead letters
    max_event_id_length: int = 256
    #: the serving latency field of prediction events (None: not read)
    f_latency: str | None = None
    #: the prediction is a probability: a score outside [0, 1] is a dead letter
    #: (``out_of_range``); see :func:`scores_are_probabilities`
    probabilities: bool = False

    @classmethod
    def from_config(cls, m: ModelConfig, *, probabilities: bool = False) -> ModelSchema:
        f = m.fields
        return cls(
            name=m.name,
            layout=m.layout,
            numerical=tuple(m.features.numerical),
            categorical=tuple(m.features.categorical),
            prediction_type=m.prediction_type,
            segments=tuple(m.segments),
            f_event_id=f.event_id,
            f_version=f.version,
            f_ts=f.ts,
            f_features=f.features,
            f_prediction=f.prediction,
            f_segment=f.segment,
            f_label=f.label,
            max_event_id_length=m.limits.max_event_id_length,
            f_latency=m.fields.latency,
            probabilities=probabilities,
        )

    @property
    def features(self) -> tuple[str, ...]:
        return self.numerical + self.categorical


def scores_are_probabilities(m: ModelConfig, reference: Mapping[str, np.ndarray]) -> bool | None:
    """Whether ``m``'s scores are probabilities, a property of the model (not of each window):
    ``performance.probabilities`` when set; else, for a classifier publishing a score with
    performance enabled, whether every finite value of the reference's prediction column
    (``reference``: the reference's columns by name) is in [0, 1] (None without such a
    column: each window decides, as :func:`detectors.window_performance.binary_performance`
    does by default). None for any other model (no log loss or Brier score)."""
    if not (m.performance.enabled and m.task == "classification" and m.prediction_type == "numerical"):
        return None
    if m.performance.probabilities is not None:
        return m.performance.probabilities
    col = reference.get(m.prediction)
    if col is None:
        return None
    scores = np.asarray(col, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.shape[0] == 0:
        return None
    return not outside_unit(scores)  # rounding overshoots of a softmax are still probabilities


def out_of_range(name: str, value: float) -> str:
    """The dead-letter reason of a probability score outside [0, 1] (``value`` finite)."""
    return f"out_of_range: {name} {value!r} outside [0, 1] (the model's scores are probabilities)"


#: how far outside [0, 1] a probability may be and still be one: a softmax or an average
#: of probabilities overshoots by rounding (``1.0000000000000002``); such a score is
#: taken as 0 or 1 (:func:`unit_score`), anything further is a dead letter
PROBABILITY_TOLERANCE = 1e-9


def outside_unit(scores: np.ndarray) -> bool:
    """Whether any score (float64) lies outside [0, 1] by more than
    :data:`PROBABILITY_TOLERANCE`; NaN (a missing score) does not."""
    return bool(((scores < -PROBABILITY_TOLERANCE) | (scores > 1.0 + PROBABILITY_TOLERANCE)).any())


def clip_unit(scores: np.ndarray) -> bool:
    """A batch's probability scores (float64) as the fast decode paths keep them: those
    just outside [0, 1] set to 0 or 1, in place (NaN stays NaN), and True; False, the
    scores untouched, when one lies further out (:func:`outside_unit`: the per-record path
    then dead-letters it)."""
    if outside_unit(scores):
        return False
    np.clip(scores, 0.0, 1.0, out=scores)
    return True


def unit_score(name: str, value: float) -> float:
    """One probability score as :func:`clip_unit` keeps it; raises ``ValueError`` with the
    dead-letter reason (:func:`out_of_range`) when it is further outside [0, 1]."""
    if -PROBABILITY_TOLERANCE <= value <= 1.0 + PROBABILITY_TOLERANCE:
        return min(max(value, 0.0), 1.0)
    if value != value:  # NaN: a missing score
        return value
    raise ValueError(out_of_range(name, value))
