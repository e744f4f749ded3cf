"""The dict-based columnar fast path of :class:`monitor.ingest.decode.BatchDecoder`, used
when the typed path (:mod:`monitor.ingest.typed_decode`) cannot express a schema.

For a batch where every message is well-formed (the normal case), decoding is
one ``orjson.loads`` per record plus, per column, one list comprehension and
one C-level type check over the whole batch. Any anomaly (a bad message, a
missing ``ts``, a number where a category is expected, a NUL character, ...) makes
:func:`decode_fast` return ``None`` and the caller re-decodes the batch with
the per-record validator, which dead-letters exactly the bad ones. Both paths
produce identical columns for valid input (a property test checks this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from monitor.ingest.batch import (
    ColumnBatch,
    may_hold_unsafe_text,
    object_array,
    record_timestamps,
    record_values,
)
from monitor.ingest.event_time import epoch_ms_column, in_range, watermark_times
from monitor.ingest.schema import LATENCY_COLUMN, ModelSchema, clip_unit

_NUM_OK = frozenset({float, int, type(None)})
_CAT_OK = frozenset({str, type(None)})
_STR_OK = frozenset({str})






def decode_fast(
    records: Sequence[Any],
    schemas: Mapping[str, ModelSchema],
    prediction_names: Mapping[str, str],
    model_field: str,
    max_message_bytes: int,
    *,
    now_ms: int,
    max_future_skew_ms: int,
) -> dict[str, ColumnBatch] | None:
    """Columns per model, or ``None`` if the batch needs the per-record path.

    Event times outside the accepted range (see :mod:`monitor.ingest.event_time`)
    send the batch to the per-record path, which dead-letters exactly those records.
    """
    values = record_values(records)
    if not values or not all(values) or max(map(len, values)) > max_message_bytes or may_hold_unsafe_text(values):
        return None
    try:
        objs = list(map(orjson.loads, values))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objs)) != {dict}:
        return None
    models = [o.get(model_field) for o in objs]
    if not set(map(type, models)) <= _STR_OK:
        return None  # missing or not a string (a list or object is not even hashable)
    groups: dict[str, tuple[list[dict[str, Any]], list[Any]]] = {}
    if len(set(models)) == 1:
        groups[models[0]] = (objs, list(records))
    else:
        # one pass over the batch whatever the number of models
        for m, o, r in zip(models, objs, records, strict=True):
            g = groups.get(m)
            if g is None:
                g = groups[m] = ([], [])
            g[0].append(o)
            g[1].append(r)
    if not groups.keys() <= schemas.keys():
        return None
    out: dict[str, ColumnBatch] = {}
    for model, (objs_m, recs_m) in groups.items():
        batch = _model_batch(objs_m, recs_m, schemas[model], prediction_names[model])
        if batch is None:
            return None
        record_ts = record_timestamps(recs_m)
        if not in_range(batch.ts_ms, record_ts, now_ms, max_future_skew_ms):
            return None
        batch.wm_ms = watermark_times(batch.ts_ms, record_ts, now_ms)
        out[model] = batch
    return out


def _model_batch(objs: list[dict[str, Any]], recs: Sequence[Any], s: ModelSchema, pred_name: str) -> ColumnBatch | None:
    eids = [o.get(s.f_event_id) for o in objs]
    if not set(map(type, eids)) <= _STR_OK or max(map(len, eids)) > s.max_event_id_length:
        return None
    vers = [o.get(s.f_version) for o in objs]
    vtypes = set(map(type, vers))
    if not vtypes <= _CAT_OK:
        return None
    if type(None) in vtypes:
        vers = [v if v is not None else "" for v in vers]
    ts = epoch_ms_column([o.get(s.f_ts) for o in objs])
    if ts is None:
        return None
    if s.layout == "nested":
        feats = [o.get(s.f_features) for o in objs]
        if set(map(type, feats)) != {dict}:
            return None
    else:
        feats = objs
    if not all(s.f_prediction in o for o in objs):
        return None
    cols: dict[str, np.ndarray] = {}
    for c in s.numerical:
        v = [f.get(c) for f in feats]
        if not set(map(type, v)) <= _NUM_OK:
            return None
        cols[c] = np.array(v, dtype=np.float64)
    for c in s.categorical:
        v = [f.get(c) for f in feats]
        if not set(map(type, v)) <= _CAT_OK:
            return None
        cols[c] = object_array(v)
    pv = [o[s.f_prediction] for o in objs]
    if s.prediction_type == "numerical":
        if not set(map(type, pv)) <= _NUM_OK:
            return None
        cols[pred_name] = np.array(pv, dtype=np.float64)
        if s.probabilities and not clip_unit(cols[pred_name]):
            return None  # a score outside [0, 1]: the per-record path dead-letters it
    else:
        if not set(map(type, pv)) <= _CAT_OK:
            return None
        cols[pred_name] = object_array(pv)
    if s.f_latency:
        lat = [o.get(s.f_latency) for o in objs]
        if not set(map(type, lat)) <= _NUM_OK:
            return None
        cols[LATENCY_COLUMN] = np.array(lat, dtype=np.float64)
    segs: dict[str, np.ndarray] = {}
    if s.segments:
        so = [o.get(s.f_segment) for o in objs]
        stypes = set(map(type, so))
        if stypes == {dict}:
            src = so
        elif stypes == {type(None)}:
            src = objs
        else:
            return None
        for name in s.segments:
            v = [d.get(name) for d in src]
            if not set(map(type, v)) <= _CAT_OK:
                return None
            segs[name] = object_array(v)
    return ColumnBatch.of_records(
        s.name, recs, ts_ms=ts, event_id=eids, version=vers,
        segments=segs, columns=cols,
    )
