"""The typed fast path: msgspec decodes each message straight into a per-model struct.

One tagged union of structs (the tag is the model field) is built once from the
configured schemas, so decoding validates every type in C: numerical columns are
``float | null`` (JSON integers accepted), categorical ones, versions and segment
values ``str | null``, the event id ``str``, the features object required in the
nested layout. Columns are then read by turning each struct into the tuple of its
fields (``msgspec.structs.astuple``) and cutting those into columns, all in C; the
numbers are packed into float64 arrays by ``struct`` (:func:`float_column`). Unknown
fields are ignored.

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

import gc
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

import msgspec
import numpy as np
from msgspec.structs import astuple

from monitor.ingest.batch import (
    ColumnBatch,
    float_column,
    may_hold_unsafe_text,
    object_array,
    record_fields,
    record_positions,
    record_timestamps,
    record_values,
)
from monitor.ingest.event_time import epoch_ms_column, in_range, watermark_times
from monitor.ingest.schema import LATENCY_COLUMN, ModelSchema, clip_unit

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


#: how many decodes pause the collector now, and the lock that guards it with the
#: collector's state: two threads decoding at once cannot leave it off for good
_pauses = 0
_pause_lock = threading.Lock()
#: whether the collector was on when the first of the current pauses began
_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, then back as it was before the first
    of any overlapping pauses (left off if it was off). Process-wide: other threads'
    allocations meanwhile are collected later. Overlapping pauses from several threads
    are counted, so the last one to end restores the state the first one found."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def _positions(struct: type[msgspec.Struct]) -> dict[str, int]:
    """Each attribute of ``struct`` -> its place in the struct's field tuple."""
    return {attr: i for i, attr in enumerate(struct.__struct_fields__)}


#: structs with more fields than this are transposed by ``zip``, fewer by slicing one flat
#: list (see :func:`_transposed`; callgrind of 10k structs: 5 fields 1,112 -> 803
#: instructions a struct, 25 fields 2,204 -> 2,399)
_FLAT_UP_TO = 16


def _transposed(structs: Sequence[Any]) -> Sequence[Sequence[Any]]:
    """The fields of ``structs`` (a non-empty sequence of structs with the same fields) as
    columns: one sequence per field, in the struct's field order.

    Each struct becomes the tuple of its fields (``astuple``). Narrow structs' tuples are
    appended to one flat list (``list.extend``, driven in C by a zero-length ``deque``)
    whose strided slices are the columns: each tuple is freed at once and no iterator is
    made per struct, as ``zip(*tuples)`` does; per field, slicing costs more than ``zip``,
    so wide structs are transposed by ``zip``. ``TypeError`` if an element is not a struct
    (a missing nested object), ``ValueError`` if the structs' field counts differ."""
    k = len(getattr(structs[0], "__struct_fields__", ()))  # not a struct: astuple raises below
    if k > _FLAT_UP_TO:
        return list(zip(*map(astuple, structs), strict=True))
    flat: list[Any] = []
    deque(map(flat.extend, map(astuple, structs)), maxlen=0)
    if len(flat) != k * len(structs):
        raise ValueError("structs with different numbers of fields")
    return [flat[i::k] for i in range(k)]


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
        self.features_struct: type[msgspec.Struct] | None = None
        if s.layout == "nested":
            self.features_struct = feats.struct(f"Features_{tag}")
            self.features = top.add(s.f_features, self.features_struct | None)
        self.segment_obj = None
        self.segment_struct: type[msgspec.Struct] | None = None
        self.segment_top: list[str] = []
        self.segment_in: list[str] = []
        if s.segments:
            seg = _Fields()
            self.segment_in = [seg.add(k, _CAT) for k in s.segments]
            self.segment_struct = seg.struct(f"Segment_{tag}")
            self.segment_obj = top.add(s.f_segment, self.segment_struct | None)
            self.segment_top = [top.add(k, _CAT) for k in s.segments]
        del top.by_key[model_field]
        self.struct = top.struct(f"Event_{tag}", tag=s.name, tag_field=model_field)
        # where each attribute stands in its struct's field tuple (msgspec.structs.astuple)
        at_top = _positions(self.struct)
        at_feat = _positions(self.features_struct) if self.features_struct is not None else at_top
        self.i_event_id, self.i_version, self.i_ts, self.i_prediction = (
            at_top[self.event_id], at_top[self.version], at_top[self.ts], at_top[self.prediction]
        )
        self.i_latency = at_top[self.latency] if self.latency is not None else None
        self.i_features = at_top[self.features] if self.features is not None else None
        self.i_numerical = [at_feat[a] for a in self.numerical]
        self.i_categorical = [at_feat[a] for a in self.categorical]
        self.i_segment_obj = at_top[self.segment_obj] if self.segment_obj is not None else None
        self.i_segment_top = [at_top[a] for a in self.segment_top]
        at_seg = _positions(self.segment_struct) if self.segment_struct is not None else {}
        self.i_segment_in = [at_seg[a] for a in self.segment_in]

    @property
    def layout(self) -> tuple[Any, ...]:
        """What reading this model's structs depends on: models with equal layouts (the same
        shape of message, whatever their names) are read together, one pass per column."""
        s = self.schema
        return (
            self.event_id, self.version, self.ts, self.prediction, s.prediction_type, self.latency,
            tuple(self.numerical), tuple(self.categorical), self.features is not None,
            self.segment_obj, tuple(self.segment_top), tuple(self.segment_in), s.max_event_id_length,
            s.probabilities,
        )

    def rows(self, objs: list[Any]) -> _Rows | None:
        """The columns of ``objs`` (structs of this plan's layout, any models of it), by
        position; ``None`` if a value needs the per-record path to be named.

        Each struct is turned into the tuple of its fields (``astuple``, in C) and the
        tuples cut into columns (:func:`_transposed`): one C-level pass per struct instead
        of an attribute look-up per column and struct (several times cheaper); numbers
        become float64 through :func:`float_column`."""
        s = self.schema
        top = _transposed(objs)
        eids = top[self.i_event_id]
        try:  # a missing event id has no len(): no C-level pass for None needed first
            too_long = max(map(len, eids)) > s.max_event_id_length
        except TypeError:
            return None
        if too_long:
            return None
        if self.i_features is not None:
            try:  # a missing features object is no struct: astuple() raises
                feats = _transposed(top[self.i_features])
            except TypeError:
                return None
        else:
            feats = top
        ts = epoch_ms_column(top[self.i_ts])
        if ts is None:
            return None
        vers = top[self.i_version]
        if None in vers:
            vers = [v if v is not None else "" for v in vers]
        num = [float_column(feats[i]) for i in self.i_numerical]
        cat = [object_array(feats[i]) for i in self.i_categorical]
        pv = top[self.i_prediction]
        numerical_prediction = s.prediction_type == "numerical"
        pred = float_column(pv) if numerical_prediction else object_array(pv)
        latency = float_column(top[self.i_latency]) if self.i_latency is not None else None
        checked = [*num, *((pred,) if numerical_prediction else ()), *((latency,) if latency is not None else ())]
        for a in checked:
            if np.isinf(a).any():
                return None  # 1e308 * 10 style values: the per-record path names them
        if s.probabilities and numerical_prediction and not clip_unit(pred):
            return None  # a score outside [0, 1]: the per-record path dead-letters it
        segs: list[np.ndarray] = []
        if s.segments:
            so = top[self.i_segment_obj]  # type: ignore[index]
            present = [o is not None for o in so]
            if all(present):
                src, at = _transposed(so), self.i_segment_in
            elif not any(present):
                src, at = top, self.i_segment_top
            else:
                return None  # some with a segment object, some without: the per-record path
            segs = [object_array(src[i]) for i in at]
        return _Rows(ts, object_array(eids), object_array(vers), num, cat, pred, latency, segs)

    def batch(self, rows: _Rows, idx: np.ndarray | None, partition: np.ndarray, offset: np.ndarray) -> ColumnBatch:
        """This model's batch: ``rows`` at ``idx`` (all of them for ``None``) under its names;
        ``partition`` and ``offset`` are already those rows'."""
        s = self.schema

        def at(a: np.ndarray) -> np.ndarray:
            return a if idx is None else a[idx]

        cols = {c: at(a) for c, a in zip(s.numerical, rows.numerical, strict=True)}
        cols.update((c, at(a)) for c, a in zip(s.categorical, rows.categorical, strict=True))
        cols[self.pred_name] = at(rows.prediction)
        if rows.latency is not None:
            cols[LATENCY_COLUMN] = at(rows.latency)
        return ColumnBatch(
            model=s.name, ts_ms=at(rows.ts_ms), partition=partition, offset=offset,
            event_id=at(rows.event_id), version=at(rows.version),
            segments={k: at(a) for k, a in zip(s.segments, rows.segments, strict=True)}, columns=cols,
        )


@dataclass(slots=True)
class _Rows:
    """The columns of one layout's structs, by position (the names are each model's)."""

    ts_ms: np.ndarray
    event_id: np.ndarray
    version: np.ndarray
    numerical: list[np.ndarray]
    categorical: list[np.ndarray]
    prediction: np.ndarray
    latency: np.ndarray | None
    segments: list[np.ndarray]


class TypedDecoder:
    """Decodes a batch of records into per-model columns, or says it cannot (``None``)."""

    def __init__(
        self, schemas: Mapping[str, ModelSchema], prediction_names: Mapping[str, str], model_field: str
    ) -> None:
        self.plans: dict[type, _ModelPlan] = {}
        for i, (name, s) in enumerate(schemas.items()):
            plan = _ModelPlan(s, prediction_names[name], model_field, str(i))
            self.plans[plan.struct] = plan
        self._plan_list = list(self.plans.values())
        #: a struct type -> its model's index in ``_plan_list``
        self._code = {t: i for i, t in enumerate(self.plans)}
        #: a layout's index -> the first plan of that layout (any of them reads all their structs)
        self._layout_plan: list[_ModelPlan] = []
        layouts: dict[tuple[Any, ...], int] = {}
        layout_of = []
        for plan in self._plan_list:
            i = layouts.get(plan.layout)
            if i is None:
                i = layouts[plan.layout] = len(self._layout_plan)
                self._layout_plan.append(plan)
            layout_of.append(i)
        #: a model's index -> its layout's index
        self._layout_of = np.array(layout_of, dtype=np.intp)
        types = tuple(self.plans)
        self._decode_one = msgspec.json.Decoder(Union[types] if len(types) > 1 else types[0]).decode  # noqa: UP007

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
        self, records: Sequence[Any], max_message_bytes: int, *, now_ms: int, max_future_skew_ms: int,
        positions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, ColumnBatch] | None:
        """The batch's columns per model, or ``None`` when it needs the per-record path.
        ``positions``: the records' :func:`~monitor.ingest.batch.record_positions` if the
        caller has them (read here otherwise); the batches may share those arrays.

        The cyclic garbage collector is paused meanwhile (:func:`_gc_paused`): reading the
        columns makes a tuple per struct (``astuple``), all acyclic and dead by the end,
        and the collections their count would trigger only walk them (~3k instructions
        per event of a 25-column batch)."""
        with _gc_paused():
            return self._decode(
                records, max_message_bytes, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms, positions=positions
            )

    def _decode(
        self, records: Sequence[Any], max_message_bytes: int, *, now_ms: int, max_future_skew_ms: int,
        positions: tuple[np.ndarray, np.ndarray] | None,
    ) -> dict[str, ColumnBatch] | None:
        fields = record_fields(records)
        values = record_values(records, fields)
        if not values or not all(values) or max(map(len, values)) > max_message_bytes or may_hold_unsafe_text(values):
            return None
        try:
            objs = list(map(self._decode_one, values))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        partition, offset = positions if positions is not None else record_positions(records, fields)
        record_ts = record_timestamps(records, fields)
        kinds = list(map(type, objs)) if len(self._plan_list) > 1 else None
        if kinds is None or len(set(kinds)) == 1:
            plan = self._plan_list[0] if kinds is None else self.plans[kinds[0]]
            rows = plan.rows(objs)
            if rows is None or not in_range(rows.ts_ms, record_ts, now_ms, max_future_skew_ms):
                return None
            batch = plan.batch(rows, None, partition, offset)
            batch.wm_ms = watermark_times(batch.ts_ms, record_ts, now_ms)
            return {plan.schema.name: batch}
        # several models: each layout's structs read once, one pass per column, then split
        code = np.fromiter(map(self._code.__getitem__, kinds), dtype=np.intp, count=len(kinds))
        layout = self._layout_of[code]
        lays = np.unique(layout).tolist()
        parts: dict[int, tuple[_Rows, np.ndarray | None]] = {}
        for lay in lays:
            # sel: this layout's positions in the batch (None: the whole batch, ascending)
            sel = None if len(lays) == 1 else np.flatnonzero(layout == lay)
            rows = self._layout_plan[lay].rows(objs if sel is None else [objs[i] for i in sel.tolist()])
            if rows is None:
                return None
            if not in_range(rows.ts_ms, record_ts if sel is None else record_ts[sel], now_ms, max_future_skew_ms):
                return None
            parts[lay] = (rows, sel)
        # each model's positions in the batch, ascending: a run of one stable sort by model
        order = np.argsort(code, kind="stable")
        models, first, counts = np.unique(code, return_index=True, return_counts=True)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        out: dict[str, ColumnBatch] = {}
        for k in np.argsort(first).tolist():  # models in order of first appearance, as the batch has them
            m = int(models[k])
            at = order[starts[k]:starts[k] + counts[k]]
            rows, sel = parts[int(self._layout_of[m])]
            plan = self._plan_list[m]
            # the rows of its layout's read: ``at`` itself, or where ``at`` stands in ``sel``
            batch = plan.batch(rows, at if sel is None else np.searchsorted(sel, at), partition[at], offset[at])
            batch.wm_ms = watermark_times(batch.ts_ms, record_ts[at], now_ms)
            out[plan.schema.name] = batch
        return out
