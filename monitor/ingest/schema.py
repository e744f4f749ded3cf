"""What the daemon expects of each model's messages, derived once from the config."""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def from_config(cls, m: ModelConfig) -> ModelSchema:
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
        )

    @property
    def features(self) -> tuple[str, ...]:
        return self.numerical + self.categorical
