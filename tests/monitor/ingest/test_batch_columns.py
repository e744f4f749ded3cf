"""The column helpers of the fast decode paths give exactly what numpy's generic
conversions gave, and the typed path leaves the garbage collector as it found it."""

from __future__ import annotations

import gc
import threading
from collections import namedtuple
from datetime import UTC, datetime
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.config import ModelConfig
from monitor.ingest.batch import (
    claimed,
    float_column,
    int_column,
    next_offsets,
    object_array,
    record_fields,
    record_positions,
    record_timestamps,
    record_values,
)
from monitor.ingest.schema import ModelSchema
from monitor.ingest.typed_decode import TypedDecoder

Rec = namedtuple("Rec", "topic partition offset timestamp value")


@pytest.mark.parametrize("values", [
    [1.5, -0.0, 5e-324, 1.7976931348623157e308, 0.1],
    [1.0, None, 3.25],  # None: numpy's conversion, NaN
    [1, 2**53 + 1, -7],  # ints as numpy rounds them
    (2.5,),
    [],
])
def test_float_column_is_numpys_conversion_bit_for_bit(values: Any) -> None:
    got = float_column(values)
    want = np.array(values, dtype=np.float64)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert got.flags.writeable  # clip_unit writes probability scores in place


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("values", [[0, 7, -3, 2**31 - 1], [True, 4], [np.int64(9), 1], []])
def test_int_column_is_fromiters_conversion(values: list[Any], dtype: Any) -> None:
    """Partitions and offsets packed by ``struct`` are what ``np.fromiter`` made of them."""
    got = int_column(values, dtype)
    want = np.fromiter(values, dtype=dtype, count=len(values))
    assert got.dtype == want.dtype and got.tolist() == want.tolist()


@pytest.mark.parametrize("values", [[1, 2**31], [2**63], [1, 2.5]])
def test_int_column_leaves_what_struct_refuses_to_fromiter(values: list[Any]) -> None:
    """Out of range or not an integer: ``np.fromiter`` converts or raises, as before."""
    dtype = np.int32 if values[-1] == 2**31 else np.int64
    try:
        want: Any = np.fromiter(values, dtype=dtype, count=len(values)).tolist()
    except (OverflowError, TypeError, ValueError) as exc:
        want = type(exc)
    try:
        got: Any = int_column(values, dtype).tolist()
    except (OverflowError, TypeError, ValueError) as exc:
        got = type(exc)
    assert got == want


def test_object_array_keeps_each_value_one_element() -> None:
    got = object_array(("a", None, ("x", "y"), ("z", "w")))
    assert got.shape == (4,) and got.dtype == object
    assert got.tolist() == ["a", None, ("x", "y"), ("z", "w")]


@pytest.mark.parametrize("stamps", [
    [5, 7, 2**62],
    [5, None, 7],
    [5, 7.5, 7],
    [True, 3],
    [np.int64(4), 3],  # not an int: no timestamp, as before
    [],
])
def test_record_timestamps_keep_the_per_record_rule(stamps: list[Any]) -> None:
    recs = [Rec("t", 3, 10 + i, ts, b"") for i, ts in enumerate(stamps)]
    want = [ts if isinstance(ts, int) else -1 for ts in stamps]
    got = record_timestamps(recs)
    assert got.dtype == np.int64 and got.tolist() == want
    partition, offset = record_positions(recs)
    assert partition.dtype == np.int32 and partition.tolist() == [3] * len(stamps)
    assert offset.dtype == np.int64 and offset.tolist() == [10 + i for i in range(len(stamps))]


def _consumer_records(n: int, partitions: list[int]) -> list[Any]:
    """kafka-python's own record type, as a poll returns it."""
    from kafka.consumer.fetcher import ConsumerRecord  # noqa: PLC0415

    return [
        ConsumerRecord("t", partitions[i % len(partitions)], 0, 40 - i, 1_700 + i, 0, None, b"v%d" % i, [], None, -1, 2, -1)
        for i in range(n)
    ]


class _Shifted(Rec):
    """A namedtuple whose offset attribute is not its tuple field."""

    __slots__ = ()

    @property
    def offset(self) -> int:  # type: ignore[override]
        return tuple.__getitem__(self, 2) + 1000


def _by_attribute(recs: list[Any]) -> tuple[list[Any], list[int], list[int], list[int]]:
    return (
        [r.value for r in recs], [r.partition for r in recs], [r.offset for r in recs],
        [r.timestamp if isinstance(r.timestamp, int) else -1 for r in recs],
    )


@pytest.mark.parametrize("kind", ["consumer record", "namedtuple", "overridden field", "mixed", "namespace"])
def test_record_fields_read_what_the_attributes_hold(kind: str) -> None:
    """Records of one namedtuple type (kafka-python's ConsumerRecord) are read by position
    (an ``itemgetter``, several times cheaper than the attribute look-up); any other
    records by attribute; both give each record's own attributes."""
    recs: list[Any] = {
        "consumer record": lambda: _consumer_records(5, [2, 0]),
        "namedtuple": lambda: [Rec("t", 1, 9 - i, 1_700 + i, b"x%d" % i) for i in range(4)],
        "overridden field": lambda: [_Shifted("t", 1, i, 5, b"y") for i in range(3)],
        "mixed": lambda: [Rec("t", 1, 3, 5, b"a"), _Shifted("t", 1, 4, 6, b"b")],
        "namespace": lambda: [SimpleNamespace(topic="t", partition=4, offset=i, timestamp=None, value=b"z") for i in range(3)],
    }[kind]()
    f = record_fields(recs)
    by_position = kind in ("consumer record", "namedtuple")
    assert isinstance(f.value, itemgetter) == by_position
    assert isinstance(f.offset, itemgetter) == by_position
    values, parts, offs, stamps = _by_attribute(recs)
    assert record_values(recs) == values
    partition, offset = record_positions(recs)
    assert partition.tolist() == parts and offset.tolist() == offs
    assert record_timestamps(recs).tolist() == stamps


def test_next_offsets_and_claimed_keep_the_per_record_rules() -> None:
    """Each partition's next offset is one past its highest (any order), partitions in order
    of first appearance; the claimed records are the batch itself when all are claimed."""
    one = _consumer_records(6, [3])
    assert next_offsets(one) == {3: 41}
    several = _consumer_records(7, [5, 1, 5])
    assert list(next_offsets(several).items()) == [(5, 41), (1, 40)]
    assert next_offsets([]) == {}
    shifted = [_Shifted("t", 2, i, 5, b"y") for i in range(3)]
    assert next_offsets(shifted) == {2: 1003}
    # positions read once by the caller (the pipeline, for the decoder too) are used as given
    assert list(next_offsets(several, record_positions(several)).items()) == [(5, 41), (1, 40)]
    assert next_offsets(one, (np.array([3, 3], np.int32), np.array([7, 9]))) == {3: 10}
    assert claimed(several, {5: 1, 1: 1}) is several
    assert claimed(several, {1: 1}) == [r for r in several if r.partition == 1]
    assert claimed(several, {}) == []


def _typed_schemas() -> dict[str, ModelSchema]:
    model = ModelConfig.model_validate({
        "name": "churn", "reference": "ref.csv", "features": {"numerical": ["age"], "categorical": ["plan"]},
    })
    return {"churn": ModelSchema.from_config(model)}


def _typed() -> TypedDecoder:
    typed = TypedDecoder.build(_typed_schemas(), {"churn": "prediction"}, "model")
    assert typed is not None
    return typed


def _records(n: int) -> list[Rec]:
    return [
        Rec("t", 0, i, 2_000_000_000_000, orjson.dumps({
            "event_id": f"e{i}", "model": "churn", "ts": 1_700_000_000_000 + i,
            "features": {"age": i / 3, "plan": "pro"}, "prediction": 0.5,
        }))
        for i in range(n)
    ]


def test_the_typed_path_runs_no_collection_and_restores_the_collector() -> None:
    """Reading columns makes a tuple per struct; the collector stays off meanwhile (each
    collection would only walk them: ~15 of them for 5,000 records), then is on again as
    before, or still off. The allocations counted meanwhile may start one collection once
    it is back on, when those tuples are gone."""
    typed, recs = _typed(), _records(5_000)
    collections: list[str] = []
    me = threading.get_ident()
    # the allocation counts earlier tests left: near a threshold, the set-up before the pause
    # starts a collection of its own, and the one allowed after it makes two (CI saw it)
    gc.collect()

    def seen(phase: str, info: dict[str, Any]) -> None:
        # this thread's collections only: a thread another test left running in this worker
        # may start one of its own while the collector is on
        if phase == "start" and threading.get_ident() == me:
            collections.append(phase)

    gc.callbacks.append(seen)
    try:
        out = typed.decode(recs, 10_000, now_ms=2_000_000_000_000, max_future_skew_ms=3_600_000)
    finally:
        gc.callbacks.remove(seen)
    assert out is not None and len(out["churn"]) == 5_000
    assert out["churn"].columns["age"][3] == 1.0
    assert len(collections) <= 1
    assert gc.isenabled()
    gc.disable()
    try:
        typed.decode(recs[:10], 10_000, now_ms=2_000_000_000_000, max_future_skew_ms=3_600_000)
        assert not gc.isenabled()
    finally:
        gc.enable()



def test_overlapping_pauses_from_two_threads_keep_the_collector_off_until_the_last_ends() -> None:
    """Two threads decoding at once: the first to end must not turn the collector back on
    under the other, and once both end it is on again (a pause that restored the state it
    found itself could leave it off for good, or on under the other thread)."""
    from monitor.ingest.typed_decode import _gc_paused

    inside, first_done, states = threading.Barrier(2), threading.Event(), []

    def first() -> None:
        with _gc_paused():
            inside.wait(timeout=5)
        first_done.set()

    def second() -> None:
        with _gc_paused():
            inside.wait(timeout=5)
            first_done.wait(timeout=5)
            states.append(gc.isenabled())

    assert gc.isenabled()
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert states == [False]
    assert gc.isenabled()

FLAT = ModelSchema.from_config(ModelConfig.model_validate({
    "name": "flat", "reference": "ref.csv", "layout": "flat", "segments": ["region"],
    "features": {"numerical": ["age", "income"], "categorical": ["plan"]}, "fields": {"latency": "took_ms"},
}))


def _flat_columns(recs: list[Rec], *, typed: bool) -> dict[str, np.ndarray]:
    """Decoded columns of the flat model, by the typed path or the per-record one."""
    from monitor.ingest.decode import BatchDecoder, _Builder  # noqa: PLC0415

    d = BatchDecoder({"flat": FLAT}, prediction_names={"flat": "prediction"})
    if typed:
        assert d.typed is not None
        out = d.typed.decode(recs, 10_000, now_ms=2_000_000_000_000, max_future_skew_ms=3_600_000)
        assert out is not None, "a well-formed batch takes the typed path"
        b = out["flat"]
    else:
        builders: dict[str, _Builder] = {}
        for r in recs:
            d._one(r, r.value, builders, 2_000_000_000_000)
        b = builders["flat"].build()
    cols = dict(b.columns)
    cols.update({f"segment:{k}": a for k, a in b.segments.items()})
    cols.update(ts=b.ts_ms, event_id=b.event_id, version=b.version)
    return cols


@pytest.mark.parametrize("segment", ["object", "top level"])
def test_a_flat_layout_reads_the_per_record_columns(segment: str) -> None:
    """Flat messages: features, latency and segment values are fields of the one struct,
    read from its field tuple by position."""
    events = []
    for i in range(6):
        e: dict[str, Any] = {
            "event_id": f"e{i}", "model": "flat", "ts": 1_700_000_000_000 + i, "age": [None, 3, 4.5][i % 3],
            "income": i * 1.25, "plan": [None, "pro", "basic"][i % 3], "prediction": i / 10,
            "took_ms": [None, 7][i % 2], **({"version": "v2"} if i % 2 else {}),
        }
        region = ["eu", None, "us"][i % 3]
        if segment == "object":
            e["segment"] = {"region": region}
        else:
            e["region"] = region
        events.append(e)
    recs = [Rec("t", 0, i, 2_000_000_000_000, orjson.dumps(e)) for i, e in enumerate(events)]
    typed, slow = _flat_columns(recs, typed=True), _flat_columns(recs, typed=False)
    assert typed.keys() == slow.keys()
    for c, want in slow.items():
        got = typed[c]
        assert got.dtype == want.dtype, c
        if want.dtype == object:
            assert got.tolist() == want.tolist(), c
        else:
            assert got.tobytes() == want.tobytes(), c
    assert typed["age"][1] == 3.0 and np.isnan(typed["age"][0])
    assert typed["segment:region"].tolist() == ["eu", None, "us", "eu", None, "us"]


@pytest.mark.parametrize(("field", "reason"), [
    ("event_id", "missing_field: event_id"), ("features", "missing_field: features"),
])
def test_a_null_event_id_or_features_leaves_the_batch_to_the_per_record_path(field: str, reason: str) -> None:
    """The typed path finds a null event id by its missing len() and a null features object
    by astuple() refusing it: the batch is the per-record path's, which names the record."""
    from monitor.ingest.decode import BatchDecoder  # noqa: PLC0415

    recs = _records(4)
    bad = orjson.loads(recs[2].value)
    bad[field] = None
    recs[2] = recs[2]._replace(value=orjson.dumps(bad))
    assert _typed().decode(recs, 10_000, now_ms=2_000_000_000_000, max_future_skew_ms=3_600_000) is None
    d = BatchDecoder(_typed_schemas(), prediction_names={"churn": "prediction"})
    batches, dead = d.decode(recs, now=datetime.fromtimestamp(2_000_000_000, UTC))
    assert len(batches["churn"]) == 3
    assert [(x.offset, x.reason) for x in dead] == [(2, reason)]


@pytest.mark.parametrize("width", [1, 5, 16, 17, 25])
def test_transposed_columns_are_the_structs_fields_in_order(width: int) -> None:
    """Narrow structs (cut from one flat list) and wide ones (``zip``) give each field's
    values in the structs' order, the same objects; a missing nested object raises
    ``TypeError`` (the caller's cue for the per-record path), unequal widths ``ValueError``."""
    import msgspec

    from monitor.ingest.typed_decode import _transposed

    row = msgspec.defstruct("Row", [(f"f{i}", object) for i in range(width)])
    structs = [row(*(f"{r}:{i}" for i in range(width))) for r in range(7)]
    cols = _transposed(structs)
    assert [list(c) for c in cols] == [[f"{r}:{i}" for r in range(7)] for i in range(width)]
    assert all(c[3] is getattr(structs[3], f"f{i}") for i, c in enumerate(cols))
    with pytest.raises(TypeError):
        _transposed([*structs, None])
    other = msgspec.defstruct("Other", [(f"f{i}", object) for i in range(width + 1)])
    with pytest.raises((TypeError, ValueError)):
        _transposed([*structs, other(*range(width + 1))])


def test_all_of_type_is_exact_type_equality() -> None:
    """The decoders' "all of one type" checks: exact types, as ``set(map(type, ...))`` told
    them (a bool is no int, a subclass not its base), true for no values."""
    from monitor.ingest.batch import all_of_type

    assert all_of_type([1, 2, 3], int)
    assert not all_of_type([1, True], int)
    assert not all_of_type(["a", 1], str)
    assert all_of_type([], str)
    recs = _consumer_records(3, [0])
    assert all_of_type(recs, type(recs[0]))
    assert not all_of_type([*recs, tuple(recs[0])], type(recs[0]))
