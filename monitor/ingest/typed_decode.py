"""The typed fast path: msgspec decodes each message straight into a per-model struct.

One tagged union of structs (the tag is the model field) is built once from the
configured schemas, so decoding validates every type in C: numerical columns are
``float | null`` (JSON integers accepted), categorical ones, versions and segment
values ``str | null``, the event id ``str``, the features object required in the
nested layout. Columns are then read with ``operator.attrgetter`` over the
structs, one C-level pass per column. Unknown fields are ignored.

Anything the structs reject (a wrong type, a missing field, an unknown model,
``1e999``, malformed JSON), and a payload that may hold a NUL character (``\\u0000``,
stored as U+FFFD by the per-record path), makes :meth:`TypedDecoder.decode` return ``None``
and the caller re-decodes the batch with the per-record validator, which
dead-letters exactly the bad records; a property test checks both paths give
identical columns for valid input. Schemas a struct cannot express (one JSON key
needed with two types, a feature named like the model field) are left to the
dict-based fast path (:func:`monitor.ingest.fastdecode.decode_fast`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any, Union

import msgspec
import numpy as np

from monitor.ingest.batch import ColumnBatch, may_hold_nul, object_array, record_timestamps
from monitor.ingest.event_time import epoch_ms_column, in_range
from monitor.ingest.schema import LATENCY_COLUMN, ModelSchema

_NUM = float | None
_CAT = str | None


class _Fields:
    """JSON key -> (python attribute, type) of one struct, refusing a key with two types."""

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[str, Any]] = {}
        self.required: set[str] = set()

    def add(self, key: str, tp: Any, *, required: bool = False) -> str:
        got = self.by_key.get(key)
        if got is not None:
            if got[1] != tp or required != (key in self.required):
                raise _Inexpressible(key)
            return got[0]
        attr = f"f{len(self.by_key)}"
        self.by_key[key] = (attr, tp)
        if required:
            self.required.add(key)
        return attr

    def struct(self, name: str, **kwargs: Any) -> type[msgspec.Struct]:
        fields = [
            (attr, tp) if key in self.required else (attr, tp, None) for key, (attr, tp) in self.by_key.items()
        ]
        rename = {attr: key for key, (attr, _tp) in self.by_key.items()}
        return msgspec.defstruct(name, fields, rename=rename, gc=False, kw_only=True, **kwargs)


class _Inexpressible(Exception):
    """A schema whose messages one struct cannot describe."""


class _ModelPlan:
    """How to read one model's columns from its decoded structs."""

    def __init__(self, s: ModelSchema, pred_name: str, model_field: str, tag: str) -> None:
        self.schema = s
        self.pred_name = pred_name
        top = _Fields()
        top.by_key[model_field] = ("_tag", None)  # the union's tag: no field of its own
        self.event_id = top.add(s.f_event_id, str | None)
        self.version = top.add(s.f_version, _CAT)
        self.ts = top.add(s.f_ts, int | str | None)
        # present, possibly null: a missing prediction is a dead letter, a null one is missing
        self.prediction = top.add(s.f_prediction, _NUM if s.prediction_type == "numerical" else _CAT, required=True)
        self.latency = top.add(s.f_latency, _NUM) if s.f_latency else None
        feats = _Fields() if s.layout == "nested" else top
        self.numerical = [feats.add(c, _NUM) for c in s.numerical]
        self.categorical = [feats.add(c, _CAT) for c in s.categorical]
        self.features = None
        if s.layout == "nested":
            self.features = top.add(s.f_features, feats.struct(f"Features_{tag}") | None)
        self.segment_obj = None
        self.segment_top: list[str] = []
        self.segment_in: list[str] = []
        if s.segments:
            seg = _Fields()
            self.segment_in = [seg.add(k, _CAT) for k in s.segments]
            self.segment_obj = top.add(s.f_segment, seg.struct(f"Segment_{tag}") | None)
            self.segment_top = [top.add(k, _CAT) for k in s.segments]
        del top.by_key[model_field]
        self.struct = top.struct(f"Event_{tag}", tag=s.name, tag_field=model_field)

    def batch(self, objs: list[Any], recs: Sequence[Any]) -> ColumnBatch | None:
        s = self.schema
        eids = list(map(attrgetter(self.event_id), objs))
        if None in eids or max(map(len, eids)) > s.max_event_id_length:
            return None
        if self.features is not None:
            feats = list(map(attrgetter(self.features), objs))
            if None in feats:
                return None
        else:
            feats = objs
        ts = epoch_ms_column(list(map(attrgetter(self.ts), objs)))
        if ts is None:
            return None
        vers = list(map(attrgetter(self.version), objs))
        if None in vers:
            vers = [v if v is not None else "" for v in vers]
        cols: dict[str, np.ndarray] = {}
        for c, attr in zip(s.numerical, self.numerical, strict=True):
            cols[c] = np.array(list(map(attrgetter(attr), feats)), dtype=np.float64)
        for c, attr in zip(s.categorical, self.categorical, strict=True):
            cols[c] = object_array(list(map(attrgetter(attr), feats)))
        pv = list(map(attrgetter(self.prediction), objs))
        cols[self.pred_name] = np.array(pv, dtype=np.float64) if s.prediction_type == "numerical" else object_array(pv)
        if self.latency is not None:
            cols[LATENCY_COLUMN] = np.array(list(map(attrgetter(self.latency), objs)), dtype=np.float64)
        checked = (*s.numerical, *((self.pred_name,) if s.prediction_type == "numerical" else ()),
                   *((LATENCY_COLUMN,) if self.latency is not None else ()))
        for c in checked:
            if np.isinf(cols[c]).any():
                return None  # 1e308 * 10 style values: the per-record path names them
        segs: dict[str, np.ndarray] = {}
        if s.segments:
            so = list(map(attrgetter(self.segment_obj), objs))  # type: ignore[arg-type]
            present = [o is not None for o in so]
            if all(present):
                src, attrs = so, self.segment_in
            elif not any(present):
                src, attrs = objs, self.segment_top
            else:
                return None
            for name, attr in zip(s.segments, attrs, strict=True):
                segs[name] = object_array(list(map(attrgetter(attr), src)))
        return ColumnBatch.of_records(
            s.name, recs, ts_ms=ts, event_id=eids, version=vers,
            segments=segs, columns=cols,
        )


class TypedDecoder:
    """Decodes a batch of records into per-model columns, or says it cannot (``None``)."""

    def __init__(
        self, schemas: Mapping[str, ModelSchema], prediction_names: Mapping[str, str], model_field: str
    ) -> None:
        self.plans: dict[type, _ModelPlan] = {}
        for i, (name, s) in enumerate(schemas.items()):
            plan = _ModelPlan(s, prediction_names[name], model_field, str(i))
            self.plans[plan.struct] = plan
        types = tuple(self.plans)
        self._decode = msgspec.json.Decoder(Union[types] if len(types) > 1 else types[0]).decode  # noqa: UP007

    @classmethod
    def build(
        cls, schemas: Mapping[str, ModelSchema], prediction_names: Mapping[str, str], model_field: str
    ) -> TypedDecoder | None:
        """A typed decoder for these schemas, or ``None`` if one of them cannot be expressed."""
        if not schemas:
            return None
        try:
            return cls(schemas, prediction_names, model_field)
        except (_Inexpressible, TypeError, ValueError):
            return None

    def decode(
        self, records: Sequence[Any], max_message_bytes: int, *, now_ms: int, max_future_skew_ms: int
    ) -> dict[str, ColumnBatch] | None:
        values = [r.value for r in records]
        if not values or not all(values) or max(map(len, values)) > max_message_bytes or may_hold_nul(values):
            return None
        try:
            objs = list(map(self._decode, values))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        groups: dict[type, tuple[list[Any], list[Any]]] = {}
        kinds = set(map(type, objs))
        if len(kinds) == 1:
            groups[kinds.pop()] = (objs, list(records))
        else:
            for o, r in zip(objs, records, strict=True):
                g = groups.get(type(o))
                if g is None:
                    g = groups[type(o)] = ([], [])
                g[0].append(o)
                g[1].append(r)
        out: dict[str, ColumnBatch] = {}
        for kind, (objs_m, recs_m) in groups.items():
            plan = self.plans[kind]
            batch = plan.batch(objs_m, recs_m)
            if batch is None:
                return None
            record_ts = record_timestamps(recs_m)
            if not in_range(batch.ts_ms, record_ts, now_ms, max_future_skew_ms):
                return None
            out[plan.schema.name] = batch
        return out
