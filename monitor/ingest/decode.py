"""Decoding Kafka records into columnar per-model batches, dead-lettering the rest.

A well-formed batch (the normal case) takes the typed fast path: msgspec decodes
each payload straight into a per-model struct, validating types in C, and the
structs' fields are transposed into columns in C (:mod:`monitor.ingest.typed_decode`).
A batch holding anything unexpected is decoded record by record here, which
dead-letters exactly the bad records. No per-event objects survive the batch and
pandas is never touched.

Reason codes (the text before ``:`` in ``dead_letters.reason``): ``too_large``,
``empty``, ``not_json``, ``non_finite``, ``not_object``, ``missing_field``,
``bad_type``, ``unknown_model``, ``out_of_range`` (a score outside [0, 1] of a model
whose scores are probabilities, :attr:`ModelSchema.probabilities`).

Text read from a message (event id, version, categories, segment values) never
holds U+0000: each NUL is stored as U+FFFD on both stores (PostgreSQL text cannot
hold it, see :mod:`storage.text`). The fast paths leave a batch that may hold one
to the per-record path, which replaces it (:func:`_text`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from monitor.ingest.batch import BadMessage, ColumnBatch
from monitor.ingest.event_time import base_ms, check_future, parse_event_time
from monitor.ingest.fastdecode import decode_fast
from monitor.ingest.schema import LATENCY_COLUMN, ModelSchema, unit_score
from monitor.ingest.typed_decode import TypedDecoder
from storage.dead_letters import DeadLetter
from storage.redaction import quoted
from storage.text import segment_text, without_nul


@dataclass(slots=True)
class _Builder:
    schema: ModelSchema
    prediction_name: str
    ts: list[int] = field(default_factory=list)
    part: list[int] = field(default_factory=list)
    off: list[int] = field(default_factory=list)
    eid: list[str] = field(default_factory=list)
    ver: list[str] = field(default_factory=list)
    seg: dict[str, list[str | None]] = field(default_factory=dict)
    num: dict[str, list[float]] = field(default_factory=dict)
    cat: dict[str, list[str | None]] = field(default_factory=dict)
    #: each row's event time capped at its base (see :attr:`ColumnBatch.wm_ms`)
    wm: list[int] = field(default_factory=list)
    #: whether some row's event time is ahead of its base (then ``wm`` differs from ``ts``)
    ahead: bool = False

    def __post_init__(self) -> None:
        self.seg = {s: [] for s in self.schema.segments}
        nums = list(self.schema.numerical)
        cats = list(self.schema.categorical)
        (nums if self.schema.prediction_type == "numerical" else cats).append(self.prediction_name)
        if self.schema.f_latency:
            nums.append(LATENCY_COLUMN)
        self.num = {c: [] for c in nums}
        self.cat = {c: [] for c in cats}

    def build(self) -> ColumnBatch:
        cols: dict[str, np.ndarray] = {c: np.array(v, dtype=np.float64) for c, v in self.num.items()}
        for c, v in self.cat.items():
            a = np.empty(len(v), dtype=object)
            a[:] = v
            cols[c] = a
        segs = {}
        for s, v in self.seg.items():
            a = np.empty(len(v), dtype=object)
            a[:] = v
            segs[s] = a
        eid = np.empty(len(self.eid), dtype=object)
        eid[:] = self.eid
        ver = np.empty(len(self.ver), dtype=object)
        ver[:] = self.ver
        return ColumnBatch(
            model=self.schema.name,
            ts_ms=np.array(self.ts, dtype=np.int64),
            partition=np.array(self.part, dtype=np.int32),
            offset=np.array(self.off, dtype=np.int64),
            event_id=eid,
            version=ver,
            segments=segs,
            columns=cols,
            wm_ms=np.array(self.wm, dtype=np.int64) if self.ahead else None,
        )


def _segment(value: Any, name: str) -> str | None:
    """A segment value (see :func:`storage.text.segment_text`)."""
    text = _text(value, name, required=False)
    return None if text is None else segment_text(text)


def _text(value: Any, name: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise BadMessage(f"missing_field: {name}")
        return None
    if isinstance(value, str):
        return without_nul(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadMessage(f"non_finite: {name}")
        return str(int(value)) if value.is_integer() else repr(value)
    raise BadMessage(f"bad_type: {name} expected string, got {_jtype(value)}")


def _jtype(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(v), type(v).__name__
    )


def parse_envelope(value: bytes | None, max_bytes: int, model_field: str) -> tuple[dict[str, Any], str]:
    """The JSON object of one record and its model name, or :class:`BadMessage` with the
    reason code the dead letter gets (``empty``, ``too_large``, ``non_finite``,
    ``not_json``, ``not_object``, ``missing_field``, ``bad_type``). Shared by the
    predictions and the labels decoders."""
    if value is None or len(value) == 0:
        raise BadMessage("empty: message has no value")
    if len(value) > max_bytes:
        raise BadMessage(f"too_large: {len(value)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "infinity" in msg:
            raise BadMessage(f"non_finite: {msg}") from None
        raise BadMessage(f"not_json: {msg}") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"not_object: top-level JSON {_jtype(obj)}")
    model = obj.get(model_field)
    if model is None:
        raise BadMessage(f"missing_field: {model_field}")
    if not isinstance(model, str):
        raise BadMessage(f"bad_type: {model_field} expected string, got {_jtype(model)}")
    return obj, model


def folded_names(names: Iterable[str]) -> dict[str, str]:
    """Configured model names by their case-folded, stripped form (the first in sorted
    order where two fold alike): built once per decoder, so naming the near miss of an
    unknown model costs one lookup, whatever the number of models."""
    out: dict[str, str] = {}
    for name in sorted(names):
        out.setdefault(name.strip().casefold(), name)
    return out


def unknown_model(model: str, folded: Mapping[str, str]) -> BadMessage:
    """The ``unknown_model`` dead letter of an event naming ``model``, which no configured
    model is (``folded``: their :func:`folded_names`). A name that differs from a configured
    one only in case or in surrounding blanks (``"Fraud"``, ``"fraud "`` for ``fraud``) is a
    producer's slip, not another model's event on a shared topic: the reason then names the
    configured model. The name is cut to 100 characters, as before."""
    text = f"unknown_model: {model[:100]}"
    near = folded.get(model.strip().casefold())
    if near is not None:
        text += f" (the config has {near!r}: model names match exactly)"
    return BadMessage(text)


class BatchDecoder:
    """Turns a list of Kafka records into per-model :class:`ColumnBatch` es and dead letters.

    ``prediction_names`` maps a model to the column name its prediction takes
    in the reference data (and in ``metrics``).
    """

    def __init__(
        self,
        schemas: Mapping[str, ModelSchema],
        *,
        prediction_names: Mapping[str, str],
        model_field: str = "model",
        max_message_bytes: int = 1_048_576,
        max_future_skew_ms: int = 3_600_000,
    ) -> None:
        self.schemas = dict(schemas)
        self._folded = folded_names(self.schemas)
        self.prediction_names = dict(prediction_names)
        self.model_field = model_field
        self.max_message_bytes = max_message_bytes
        self.max_future_skew_ms = max_future_skew_ms
        #: msgspec structs for these schemas (None: a schema they cannot express)
        self.typed = TypedDecoder.build(self.schemas, self.prediction_names, model_field)

    def decode(
        self, records: Iterable[Any], *, now: datetime | None = None,
        positions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[dict[str, ColumnBatch], list[DeadLetter]]:
        """Decode records (objects with topic, partition, offset, timestamp, value).

        ``now`` is the wall clock that bounds event times (with ``max_future_skew_ms``).
        ``positions``: the records' :func:`~monitor.ingest.batch.record_positions`, when the
        caller read them already (the typed path then does not read them again).
        """
        records = list(records)
        received = now or datetime.now(UTC)
        now_ms = int(received.timestamp() * 1000)
        try:
            if self.typed is not None:
                fast = self.typed.decode(
                    records, self.max_message_bytes, now_ms=now_ms, max_future_skew_ms=self.max_future_skew_ms,
                    positions=positions,
                )
            else:
                fast = decode_fast(
                    records, self.schemas, self.prediction_names, self.model_field, self.max_message_bytes,
                    now_ms=now_ms, max_future_skew_ms=self.max_future_skew_ms,
                )
        except Exception:  # noqa: BLE001 - any surprise in a fast path: validate record by record
            fast = None
        if fast is not None:
            return fast, []
        builders: dict[str, _Builder] = {}
        dead: list[DeadLetter] = []
        for rec in records:
            value = rec.value
            try:
                self._one(rec, value, builders, now_ms)
            except BadMessage as exc:
                dead.append(DeadLetter(rec.topic, rec.partition, rec.offset, str(exc), value, received))
            except Exception as exc:  # noqa: BLE001 - the daemon never dies on a message
                dead.append(
                    DeadLetter(rec.topic, rec.partition, rec.offset, quoted(f"bad_type: {type(exc).__name__}: {exc}", 500), value, received)
                )
        return {m: b.build() for m, b in builders.items() if b.ts}, dead

    def _one(self, rec: Any, value: bytes | None, builders: dict[str, _Builder], now_ms: int) -> None:
        obj, model = parse_envelope(value, self.max_message_bytes, self.model_field)
        schema = self.schemas.get(model)
        if schema is None:
            raise unknown_model(model, self._folded)
        b = builders.get(model)
        if b is None:
            b = builders[model] = _Builder(schema, self.prediction_names[model])

        # validate everything before appending anything, so columns stay aligned
        eid = _text(obj.get(schema.f_event_id), schema.f_event_id, required=True)
        if len(eid) > schema.max_event_id_length:  # type: ignore[arg-type]
            raise BadMessage(
                f"bad_type: {schema.f_event_id} longer than {schema.max_event_id_length} characters"
            )
        ver = _text(obj.get(schema.f_version), schema.f_version, required=False) or ""
        raw_ts = obj.get(schema.f_ts)
        record_ts = rec.timestamp if isinstance(rec.timestamp, int) and rec.timestamp >= 0 else None
        if raw_ts is None:
            if record_ts is None:
                raise BadMessage(f"missing_field: {schema.f_ts} (and the record has no timestamp)")
            ts = parse_event_time(record_ts, "record timestamp")
        else:
            ts = parse_event_time(raw_ts, schema.f_ts)
        check_future(ts, schema.f_ts, record_ts, now_ms, self.max_future_skew_ms)
        if schema.layout == "nested":
            feats = obj.get(schema.f_features)
            if feats is None:
                raise BadMessage(f"missing_field: {schema.f_features}")
            if not isinstance(feats, dict):
                raise BadMessage(f"bad_type: {schema.f_features} expected object, got {_jtype(feats)}")
            prefix = schema.f_features + "."
        else:
            feats = obj
            prefix = ""
        if schema.f_prediction not in obj:
            raise BadMessage(f"missing_field: {schema.f_prediction}")
        nums = []
        for c in schema.numerical:
            v = feats.get(c)
            if v is None:
                nums.append(math.nan)
            elif type(v) is float or type(v) is int:
                nums.append(float(v))
            else:
                raise BadMessage(f"bad_type: {prefix}{c} expected number, got {_jtype(v)}")
        cats = [_text(feats.get(c), prefix + c, required=False) for c in schema.categorical]
        pred = obj[schema.f_prediction]
        if schema.prediction_type == "numerical":
            if pred is None:
                pred_v: Any = math.nan
            elif type(pred) is float or type(pred) is int or type(pred) is bool:
                pred_v = float(pred)
            else:
                raise BadMessage(f"bad_type: {schema.f_prediction} expected number, got {_jtype(pred)}")
            if schema.probabilities:
                try:
                    pred_v = unit_score(schema.f_prediction, pred_v)
                except ValueError as exc:
                    raise BadMessage(str(exc)) from None
        else:
            pred_v = _text(pred, schema.f_prediction, required=False)
        latency = math.nan
        if schema.f_latency:
            lat = obj.get(schema.f_latency)
            if lat is not None:
                if type(lat) is not float and type(lat) is not int:
                    raise BadMessage(f"bad_type: {schema.f_latency} expected number, got {_jtype(lat)}")
                latency = float(lat)
        segs = []
        if schema.segments:
            seg_obj = obj.get(schema.f_segment)
            if seg_obj is not None and not isinstance(seg_obj, dict):
                raise BadMessage(f"bad_type: {schema.f_segment} expected object, got {_jtype(seg_obj)}")
            src = seg_obj if seg_obj is not None else obj
            segs = [_segment(src.get(s), f"{schema.f_segment}.{s}") for s in schema.segments]

        b.ts.append(ts)
        base = base_ms(record_ts, now_ms)
        b.ahead |= ts > base
        b.wm.append(min(ts, base))
        b.part.append(rec.partition)
        b.off.append(rec.offset)
        b.eid.append(eid)  # type: ignore[arg-type]
        b.ver.append(ver)
        for c, v in zip(schema.numerical, nums, strict=True):
            b.num[c].append(v)
        for c, v in zip(schema.categorical, cats, strict=True):
            b.cat[c].append(v)
        (b.num if schema.prediction_type == "numerical" else b.cat)[b.prediction_name].append(pred_v)
        if schema.f_latency:
            b.num[LATENCY_COLUMN].append(latency)
        for s, v in zip(schema.segments, segs, strict=True):
            b.seg[s].append(v)
