"""Decoding label events into per-model label batches, dead-lettering the rest.

A label event is a JSON object: ``{"event_id": "…", "model": "churn", "label": 1,
"ts": "…"}`` (field names per model in ``[models.fields]``; ``ts`` optional,
defaulting to the Kafka record timestamp, range-checked like a prediction's).
The label's type must fit the model's task: a class for classification (a
string, an integer or a boolean, read as text: ``1`` and ``"1"`` are one class,
``true`` is ``"true"``), a finite number for regression.

Reason codes (the text before ``:``): those of predictions (``empty``,
``too_large``, ``not_json``, ``non_finite``, ``not_object``, ``missing_field``,
``bad_type``, ``unknown_model``) and ``no_join``: a configured model whose
label join is off (``[models.performance] enabled = false``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from monitor.config import ModelConfig
from monitor.ingest.batch import BadMessage, may_hold_unsafe_text, record_timestamps
from monitor.ingest.decode import _jtype, _text, folded_names, parse_envelope, unknown_model
from monitor.ingest.event_time import (
    base_ms,
    check_future,
    epoch_ms_column,
    in_range,
    parse_event_time,
    watermark_times,
)
from storage.dead_letters import DeadLetter
from storage.redaction import quoted


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """What one model's label events look like, derived once from the config."""

    name: str
    task: str
    f_event_id: str
    f_label: str
    f_ts: str
    max_event_id_length: int
    max_label_length: int

    @classmethod
    def from_config(cls, m: ModelConfig) -> LabelSpec:
        return cls(
            name=m.name, task=m.task, f_event_id=m.fields.event_id, f_label=m.fields.label,
            f_ts=m.fields.ts, max_event_id_length=m.limits.max_event_id_length,
            max_label_length=m.limits.max_value_length,
        )


@dataclass(slots=True)
class LabelBatch:
    """Valid labels of one model from one poll batch, in consumption order.

    ``label``: ``str`` for classification, ``float`` for regression; ``ts``: event
    time (epoch ms); ``partition``/``offset``: where each label was read.
    """

    model: str
    event_id: list[str] = field(default_factory=list)
    label: list[Any] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    partition: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    #: each label's time as it may move the join's clock (epoch ms): its ``ts`` capped at
    #: min(record timestamp, wall clock); None: ``ts`` itself (no label is ahead, the
    #: normal case; see :func:`monitor.ingest.event_time.watermark_times`)
    wm: list[int] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.event_id)

    def wm_times(self) -> np.ndarray:
        """Each label's time as it may move the join's clock (int64 epoch ms), in
        consumption order: :attr:`wm`, else ``ts``."""
        return np.array(self.ts if self.wm is None else self.wm, dtype=np.int64)


def class_label(value: Any, name: str, max_length: int) -> str:
    """A classification label as its class name (text); raises :class:`BadMessage`."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadMessage(f"non_finite: {name}")
        if not value.is_integer():
            raise BadMessage(f"bad_type: {name} expected a class (string, integer or boolean), got number {value!r}")
    if isinstance(value, dict | list):
        raise BadMessage(f"bad_type: {name} expected a class (string, integer or boolean), got {_jtype(value)}")
    text = _text(value, name, required=True)
    assert text is not None
    if len(text) > max_length:
        raise BadMessage(f"bad_type: {name} longer than {max_length} characters")
    return text


def number_label(value: Any, name: str) -> float:
    """A regression label as a finite float; raises :class:`BadMessage`."""
    if value is None:
        raise BadMessage(f"missing_field: {name}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadMessage(f"bad_type: {name} expected a number, got {_jtype(value)}")
    f = float(value)
    if not math.isfinite(f):
        raise BadMessage(f"non_finite: {name}")
    return f


class LabelDecoder:
    """Turns Kafka records of the labels topic into per-model :class:`LabelBatch` es.

    ``specs``: the models whose label join is on; ``known``: every configured
    model (a label for a known model without a join is a ``no_join`` dead letter).
    ``classes``: per score (binary) model, the classes its reference's labels hold (see
    :meth:`set_classes`); a label that is none of them is a ``bad_type`` dead letter.
    """

    def __init__(
        self,
        specs: Mapping[str, LabelSpec],
        known: Iterable[str],
        *,
        model_field: str = "model",
        max_message_bytes: int = 1_048_576,
        max_future_skew_ms: int = 3_600_000,
    ) -> None:
        self.specs = dict(specs)
        self.known = set(known)
        self._folded = folded_names(self.known)
        self.model_field = model_field
        self.max_message_bytes = max_message_bytes
        self.max_future_skew_ms = max_future_skew_ms
        #: per binary model: the label classes its reference holds (absent: any class goes)
        self.classes: dict[str, frozenset[str]] = {}
        #: per model in :attr:`classes`: its first classes as a dead letter names them
        self._classes_text: dict[str, str] = {}

    def set_classes(self, model: str, classes: frozenset[str] | None) -> None:
        """The classes a label of ``model`` may be (None or empty: any). For a score model
        every class but ``class_of_interest`` counts as the negative one, so a label the
        reference never holds (``true``, ``"yes"`` where the reference says 0/1) would be
        read as a negative, silently: such labels are dead letters instead."""
        if classes:
            self.classes[model] = frozenset(classes)
            # worked out once: a flood of refused labels must not sort the classes each time
            self._classes_text[model] = ", ".join(c[:40] for c in sorted(self.classes[model])[:5])
        else:
            self.classes.pop(model, None)
            self._classes_text.pop(model, None)

    def decode(self, records: Iterable[Any], *, now: datetime | None = None) -> tuple[dict[str, LabelBatch], list[DeadLetter]]:
        """Decode records (objects with topic, partition, offset, timestamp, value).

        A batch where every message is well-formed is decoded column by column (one
        ``orjson.loads`` per record, one type check per column); any anomaly sends the
        batch through the per-record validator, which dead-letters exactly the bad
        records. Both give the same labels for valid input.
        """
        records = list(records)
        received = now or datetime.now(UTC)
        now_ms = int(received.timestamp() * 1000)
        try:
            fast = self._fast(records, now_ms)
        except Exception:  # noqa: BLE001 - any surprise: validate record by record
            fast = None
        if fast is not None:
            return fast, []
        out: dict[str, LabelBatch] = {}
        dead: list[DeadLetter] = []
        for rec in records:
            try:
                model, eid, label, ts, capped = self._one(rec, now_ms)
            except BadMessage as exc:
                dead.append(DeadLetter(rec.topic, rec.partition, rec.offset, str(exc), rec.value, received))
                continue
            except Exception as exc:  # noqa: BLE001 - the daemon never dies on a message
                reason = quoted(f"bad_type: {type(exc).__name__}: {exc}", 500)
                dead.append(DeadLetter(rec.topic, rec.partition, rec.offset, reason, rec.value, received))
                continue
            b = out.get(model)
            if b is None:
                b = out[model] = LabelBatch(model)
            b.event_id.append(eid)
            b.label.append(label)
            b.ts.append(ts)
            b.partition.append(rec.partition)
            b.offset.append(rec.offset)
            if b.wm is not None or capped != ts:
                if b.wm is None:
                    b.wm = b.ts[:-1]
                b.wm.append(capped)
        return out, dead

    def _fast(self, records: list[Any], now_ms: int) -> dict[str, LabelBatch] | None:
        values = [r.value for r in records]
        if not values or not all(values) or max(map(len, values)) > self.max_message_bytes or may_hold_unsafe_text(values):
            return None  # a NUL (stored as U+FFFD): the per-record path replaces it
        try:
            objs = list(map(orjson.loads, values))
        except orjson.JSONDecodeError:
            return None
        if set(map(type, objs)) != {dict}:
            return None
        models = [o.get(self.model_field) for o in objs]
        if not set(map(type, models)) <= {str}:
            return None
        distinct = set(models)
        if not distinct <= self.specs.keys():
            return None
        out: dict[str, LabelBatch] = {}
        for model in distinct:
            spec = self.specs[model]
            if len(distinct) == 1:
                objs_m, recs_m = objs, records
            else:
                idx = [i for i, m in enumerate(models) if m == model]
                objs_m, recs_m = [objs[i] for i in idx], [records[i] for i in idx]
            eids = [o.get(spec.f_event_id) for o in objs_m]
            if not set(map(type, eids)) <= {str} or max(map(len, eids)) > spec.max_event_id_length:
                return None
            raw = [o.get(spec.f_label) for o in objs_m]
            kinds = set(map(type, raw))
            if spec.task == "regression":
                if not kinds <= {int, float}:
                    return None
                labels: list[Any] = [float(v) for v in raw]
            else:
                if not kinds <= {str, int}:
                    return None  # booleans, floats, null: the per-record path decides
                labels = raw if kinds == {str} else [v if type(v) is str else str(v) for v in raw]
                if max(map(len, labels)) > spec.max_label_length:
                    return None
                allowed = self.classes.get(model)
                if allowed is not None and not allowed.issuperset(labels):
                    return None  # a class the reference lacks: the per-record path dead-letters it
            ts = epoch_ms_column([o.get(spec.f_ts) for o in objs_m])
            if ts is None:
                return None
            record_ts = record_timestamps(recs_m)
            if not in_range(ts, record_ts, now_ms, self.max_future_skew_ms):
                return None
            capped = watermark_times(ts, record_ts, now_ms)
            out[model] = LabelBatch(
                model, eids, labels, ts.tolist(), [r.partition for r in recs_m], [r.offset for r in recs_m],
                wm=None if capped is None else capped.tolist(),
            )
        return out

    def _one(self, rec: Any, now_ms: int) -> tuple[str, str, Any, int, int]:
        """A label record's model, event id, label, event time, and that time capped at
        min(record timestamp, wall clock) (the most it may move the join's clock); raises
        :class:`BadMessage`."""
        obj, model = parse_envelope(rec.value, self.max_message_bytes, self.model_field)
        spec = self.specs.get(model)
        if spec is None:
            if model in self.known:
                raise BadMessage(f"no_join: model {model} has no label join ([models.performance] enabled = false)")
            raise unknown_model(model, self._folded)
        eid = _text(obj.get(spec.f_event_id), spec.f_event_id, required=True)
        assert eid is not None
        if len(eid) > spec.max_event_id_length:
            raise BadMessage(f"bad_type: {spec.f_event_id} longer than {spec.max_event_id_length} characters")
        raw = obj.get(spec.f_label)
        if raw is None:
            raise BadMessage(f"missing_field: {spec.f_label}")
        if spec.task == "regression":
            label: Any = number_label(raw, spec.f_label)
        else:
            label = class_label(raw, spec.f_label, spec.max_label_length)
            allowed = self.classes.get(model)
            if allowed is not None and label not in allowed:
                raise BadMessage(f"bad_type: {spec.f_label} {label[:40]!r} is none of the classes"
                                 f" of the reference ({self._classes_text[model]})")
        raw_ts = obj.get(spec.f_ts)
        record_ts = rec.timestamp if isinstance(rec.timestamp, int) and rec.timestamp >= 0 else None
        if raw_ts is None:
            if record_ts is None:
                raise BadMessage(f"missing_field: {spec.f_ts} (and the record has no timestamp)")
            ts = parse_event_time(record_ts, "record timestamp")
        else:
            ts = parse_event_time(raw_ts, spec.f_ts)
        check_future(ts, spec.f_ts, record_ts, now_ms, self.max_future_skew_ms)
        return model, eid, label, ts, min(ts, base_ms(record_ts, now_ms))
