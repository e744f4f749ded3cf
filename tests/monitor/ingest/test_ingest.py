"""The decoder: fast columnar path equals the per-record path; bad records never raise."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import ModelConfig
from monitor.ingest.decode import BatchDecoder
from monitor.ingest.event_time import MAX_EVENT_MS, NO_TIME, parse_event_time, vouch
from monitor.ingest.fastdecode import decode_fast
from monitor.ingest.schema import ModelSchema

Rec = namedtuple("Rec", "topic partition offset timestamp value")

MODEL = ModelConfig.model_validate({
    "name": "churn", "reference": "ref.csv", "segments": ["region"],
    "features": {"numerical": ["age", "income"], "categorical": ["plan"]},
})
SCHEMA = ModelSchema.from_config(MODEL)

#: the wall clock the decoder is given, and the records' Kafka timestamp (both after every good ts)
NOW = datetime(2031, 1, 1, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
REC_TS = NOW_MS - 1000
HOUR_MS = 3_600_000


def decoder() -> BatchDecoder:
    return BatchDecoder({"churn": SCHEMA}, prediction_names={"churn": "prediction"}, max_message_bytes=10_000)


def slow_decode(recs: list[Rec]) -> Any:
    d = decoder()
    # force the per-record path by calling its internals the way decode() does after a fast-path miss
    from monitor.ingest.decode import _Builder  # noqa: PLC0415

    builders: dict[str, _Builder] = {}
    for r in recs:
        d._one(r, r.value, builders, NOW_MS)
    return {m: b.build() for m, b in builders.items()}


num = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32))
cat = st.one_of(st.none(), st.sampled_from(["basic", "pro", "ü-ñ", ""]))
event = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=8),
        "model": st.just("churn"),
        "ts": st.one_of(st.integers(0, REC_TS), st.just("2026-11-23T14:00:00.123Z"), st.just("2026-11-23T14:00:00+02:00")),
        "features": st.fixed_dictionaries({"age": num, "income": num, "plan": cat}),
        "prediction": num,
    },
    optional={"version": st.sampled_from(["v1", "v2"]), "segment": st.fixed_dictionaries({"region": cat})},
)


def _eq(a: Any, b: Any) -> None:
    assert a.keys() == b.keys()
    for m in a:
        x, y = a[m], b[m]
        np.testing.assert_array_equal(x.ts_ms, y.ts_ms)
        np.testing.assert_array_equal(x.offset, y.offset)
        assert x.event_id.tolist() == y.event_id.tolist()
        assert x.version.tolist() == y.version.tolist()
        assert x.columns.keys() == y.columns.keys()
        for c in x.columns:
            if x.columns[c].dtype == object:
                assert x.columns[c].tolist() == y.columns[c].tolist()
            else:
                np.testing.assert_array_equal(x.columns[c], y.columns[c])
        for s in x.segments:
            assert x.segments[s].tolist() == y.segments[s].tolist()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=20))
def test_fast_path_equals_per_record_path(events: list[dict[str, Any]]) -> None:
    recs = [Rec("t", 0, i, REC_TS, orjson.dumps(e)) for i, e in enumerate(events)]
    fast = decode_fast(
        recs, {"churn": SCHEMA}, {"churn": "prediction"}, "model", 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS
    )
    slow = slow_decode(recs)
    if fast is not None:
        _eq(fast, slow)
    typed = decoder().typed
    assert typed is not None
    typed_out = typed.decode(recs, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
    if fast is not None:
        assert typed_out is not None, "the typed path takes every batch the dict path takes"
    if typed_out is not None:
        _eq(typed_out, slow)
    got, dead = decoder().decode(recs, now=NOW)
    assert dead == []
    _eq(got, slow)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10))
def test_decoder_never_raises_and_accounts_for_every_record(payloads: list[bytes]) -> None:
    recs = [Rec("t", 0, i, REC_TS, p) for i, p in enumerate(payloads)]
    batches, dead = decoder().decode(recs, now=NOW)
    assert sum(len(b) for b in batches.values()) + len(dead) == len(recs)


def test_one_bad_record_in_a_batch_costs_only_itself() -> None:
    good = {"event_id": "a", "model": "churn", "ts": 5, "features": {"age": 1, "income": 2, "plan": "pro"}, "prediction": 0.5}
    recs = [Rec("t", 0, 0, 0, orjson.dumps(good)), Rec("t", 0, 1, 0, b'{"model": "churn", "features": {}}'),
            Rec("t", 0, 2, 0, orjson.dumps(good))]
    batches, dead = decoder().decode(recs)
    assert len(batches["churn"]) == 2
    assert [(d.offset, d.reason) for d in dead] == [(1, "missing_field: event_id")]


def test_event_time_forms() -> None:
    assert parse_event_time(1_700_000_000_123, "ts") == 1_700_000_000_123
    assert parse_event_time("1970-01-01T00:00:01.5Z", "ts") == 1500
    assert parse_event_time("1970-01-01T02:00:00+02:00", "ts") == 0
    assert parse_event_time("1970-01-01T00:00:02", "ts") == 2000  # no offset: UTC


# -- hostile event times ---------------------------------------------------------------

GOOD = {"event_id": "a", "model": "churn", "features": {"age": 1, "income": 2, "plan": "pro"}, "prediction": 0.5}


def _with_ts(ts: Any) -> bytes:
    return orjson.dumps({**GOOD, "ts": ts})


def test_event_times_out_of_range_are_dead_letters_not_crashes() -> None:
    poisons: list[tuple[Any, str]] = [
        (-100_000_000_000_000, "bad_type: ts out of range"),
        (-1, "bad_type: ts out of range"),
        (1e30, "bad_type: ts out of range"),
        (2**63 - 1, "bad_type: ts out of range"),
        (NOW_MS * 1000, "bad_type: ts out of range"),  # epoch microseconds sent as milliseconds
        (NOW_MS * 1000.0, "bad_type: ts out of range"),
        (REC_TS + 2 * HOUR_MS, "bad_type: ts too far in the future"),
        ("9999-12-31T23:59:59Z", "bad_type: ts too far in the future"),
        ("0001-01-01T00:00:00Z", "bad_type: ts out of range"),
        ("1969-12-31T23:59:59Z", "bad_type: ts out of range"),
    ]
    recs = [Rec("t", 0, i, REC_TS, _with_ts(ts)) for i, (ts, _) in enumerate(poisons)]
    recs.append(Rec("t", 0, len(recs), REC_TS, _with_ts(REC_TS)))
    # 2**63 and beyond do not fit JSON numbers orjson writes: send them as raw text
    recs.append(Rec("t", 0, len(recs), REC_TS, orjson.dumps(GOOD)[:-1] + b',"ts":9223372036854775808}'))
    recs.append(Rec("t", 0, len(recs), REC_TS, orjson.dumps(GOOD)[:-1] + b',"ts":1e400}'))
    batches, dead = decoder().decode(recs, now=NOW)
    assert batches["churn"].ts_ms.tolist() == [REC_TS]
    reasons = {d.offset: d.reason for d in dead}
    for i, (_ts, want) in enumerate(poisons):
        assert reasons[i].startswith(want), (i, reasons[i])
    assert reasons[len(poisons) + 1].split(":")[0] in ("bad_type", "not_json")
    assert reasons[len(poisons) + 2].split(":")[0] in ("non_finite", "not_json")


def test_a_hostile_record_timestamp_is_bounded_by_the_wall_clock() -> None:
    far = NOW_MS + 365 * 24 * HOUR_MS
    recs = [Rec("t", 0, 0, far, _with_ts(far)), Rec("t", 0, 1, far, orjson.dumps(GOOD))]
    batches, dead = decoder().decode(recs, now=NOW)
    assert batches == {}
    assert [d.reason.split(":", 2)[1].strip() for d in dead] == ["ts too far in the future"] * 2


def test_missing_ts_takes_the_record_timestamp_and_needs_one() -> None:
    recs = [Rec("t", 0, 0, REC_TS, orjson.dumps(GOOD)), Rec("t", 0, 1, None, orjson.dumps(GOOD)),
            Rec("t", 0, 2, -1, orjson.dumps(GOOD))]
    batches, dead = decoder().decode(recs, now=NOW)
    assert batches["churn"].ts_ms.tolist() == [REC_TS]
    assert [d.reason for d in dead] == ["missing_field: ts (and the record has no timestamp)"] * 2


def test_event_ids_longer_than_the_cap_are_dead_letters() -> None:
    recs = [Rec("t", 0, 0, REC_TS, orjson.dumps({**GOOD, "ts": REC_TS, "event_id": "x" * 257})),
            Rec("t", 0, 1, REC_TS, orjson.dumps({**GOOD, "ts": REC_TS, "event_id": "x" * 256}))]
    batches, dead = decoder().decode(recs, now=NOW)
    assert len(batches["churn"]) == 1
    assert [d.reason for d in dead] == ["bad_type: event_id longer than 256 characters"]


any_ts = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(any_ts, min_size=1, max_size=12), st.one_of(st.none(), st.integers(-(2**40), 2**45)))
def test_any_event_time_is_accepted_in_range_or_dead_lettered(values: list[Any], rec_ts: int | None) -> None:
    """Over the whole int64/float range: the decoder never raises, every accepted event time
    lies in 1970.. min(record ts, wall clock) + skew, and every other record is a dead letter."""
    recs = []
    for i, v in enumerate(values):
        try:
            payload = orjson.dumps({**GOOD, "ts": v})
        except orjson.JSONEncodeError:
            payload = orjson.dumps(GOOD)[:-1] + b',"ts":' + repr(v).encode() + b"}"
        recs.append(Rec("t", 0, i, rec_ts, payload))
    batches, dead = decoder().decode(recs, now=NOW)
    got = batches["churn"].ts_ms.tolist() if "churn" in batches else []
    assert len(got) + len(dead) == len(recs)
    base = NOW_MS if rec_ts is None or rec_ts < 0 else min(rec_ts, NOW_MS)
    assert all(0 <= t <= base + HOUR_MS <= MAX_EVENT_MS for t in got)
    for d in dead:
        assert d.reason.split(":", 1)[0] in ("bad_type", "non_finite", "missing_field", "not_json"), d.reason


def test_a_uniform_batch_takes_the_typed_path_with_the_per_record_columns() -> None:
    evs = [{**GOOD, "event_id": f"e{i}", "ts": REC_TS - i, "version": "v2", "segment": {"region": "eu"},
            "features": {"age": i, "income": 2.5, "plan": None if i % 3 else "pro"}} for i in range(50)]
    recs = [Rec("t", 0, i, REC_TS, orjson.dumps(e)) for i, e in enumerate(evs)]
    typed = decoder().typed
    assert typed is not None
    out = typed.decode(recs, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
    assert out is not None
    _eq(out, slow_decode(recs))
    assert out["churn"].columns["age"].tolist() == [float(i) for i in range(50)]
    # one record of another shape sends the batch to the per-record path, which keeps the rest
    recs.append(Rec("t", 0, 50, REC_TS, orjson.dumps({**evs[0], "event_id": "x", "features": {"age": True}})))
    assert typed.decode(recs, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS) is None
    batches, dead = decoder().decode(recs, now=NOW)
    assert len(batches["churn"]) == 50 and [d.offset for d in dead] == [50]


def test_schemas_a_struct_cannot_express_use_the_dict_path() -> None:
    flat = ModelConfig.model_validate({
        "name": "m", "reference": "ref.csv", "layout": "flat", "fields": {"version": "age"},
        "features": {"numerical": ["age"], "categorical": ["plan"]},
    })
    s = ModelSchema.from_config(flat)
    dec = BatchDecoder({"m": s}, prediction_names={"m": "prediction"})
    assert dec.typed is None  # "age" would be both a number (feature) and a string (version)


def test_a_nul_character_in_message_text_is_stored_as_the_replacement_character() -> None:
    """U+0000 (JSON ``\\u0000``) cannot be stored in PostgreSQL text: in every text field of
    a message it becomes U+FFFD, on every path (the fast paths leave such a batch to the
    per-record one); in a model name it makes an unknown model, a dead letter."""
    evs = [{**GOOD, "event_id": f"e{i}\u0000", "ts": REC_TS - i, "version": "v\u00002", "segment": {"region": "\u0000eu"},
            "features": {"age": i, "income": 2.5, "plan": "pro\u0000"}} for i in range(20)]
    evs.append({**GOOD, "event_id": "escaped", "ts": REC_TS, "version": "\\u0000 as text", "segment": {"region": "eu"}})
    recs = [Rec("t", 0, i, REC_TS, orjson.dumps(e)) for i, e in enumerate(evs)]
    typed = decoder().typed
    assert typed is not None
    for batch in (recs, [r._replace(value=r.value.replace(b"\\u0000", b"x")) for r in recs[:20]]):
        got = typed.decode(batch, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
        fast = decode_fast(batch, {"churn": SCHEMA}, {"churn": "prediction"}, "model", 10_000, now_ms=NOW_MS,
                           max_future_skew_ms=HOUR_MS)
        assert (got is None, fast is None) == ((True, True) if batch is recs else (False, False))
    batches, dead = decoder().decode(recs, now=NOW)
    b = batches["churn"]
    assert dead == []
    assert b.event_id.tolist() == [*(f"e{i}\ufffd" for i in range(20)), "escaped"]
    assert b.version.tolist() == [*["v\ufffd2"] * 20, "\\u0000 as text"]
    assert b.segments["region"].tolist()[:20] == ["\ufffdeu"] * 20
    assert b.columns["plan"].tolist()[:20] == ["pro\ufffd"] * 20
    _batches, dead = decoder().decode([Rec("t", 0, 7, REC_TS, orjson.dumps({**GOOD, "model": "churn\u0000"}))], now=NOW)
    assert [(d.offset, d.reason) for d in dead] == [(7, "unknown_model: churn\x00")]  # stored as \x00 (storage.text)


def test_the_joins_segment_separator_in_a_segment_value_is_replaced_on_every_path() -> None:
    """U+001F and U+FFFF are the label join's separator and missing mark inside stored
    segments: in a segment value each becomes U+FFFD (the fast paths leave such a batch to
    the per-record one); elsewhere in a message they are kept."""
    evs = [{**GOOD, "event_id": f"e{i}", "ts": REC_TS - i, "segment": {"region": "eu\u001fus" if i % 2 else "\uffff"},
            "features": {"age": i, "income": 2.5, "plan": "pro\u001f"}} for i in range(20)]
    recs = [Rec("t", 0, i, REC_TS, orjson.dumps(e)) for i, e in enumerate(evs)]
    typed = decoder().typed
    assert typed is not None
    assert typed.decode(recs, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS) is None
    assert decode_fast(recs, {"churn": SCHEMA}, {"churn": "prediction"}, "model", 10_000, now_ms=NOW_MS,
                       max_future_skew_ms=HOUR_MS) is None
    batches, dead = decoder().decode(recs, now=NOW)
    assert dead == []
    b = batches["churn"]
    assert b.segments["region"].tolist() == ["eu\ufffdus" if i % 2 else "\ufffd" for i in range(20)]
    assert b.columns["plan"].tolist() == ["pro\u001f"] * 20


#: three models: "upsell" has churn's shape under other names (read in the same pass),
#: "fraud" another shape (a prediction category, no segments, a fourth feature)
MULTI = {
    "churn": SCHEMA,
    "upsell": ModelSchema.from_config(ModelConfig.model_validate({
        "name": "upsell", "reference": "ref.csv", "segments": ["region"],
        "features": {"numerical": ["tenure", "spend"], "categorical": ["tier"]},
    })),
    "fraud": ModelSchema.from_config(ModelConfig.model_validate({
        "name": "fraud", "reference": "ref.csv", "prediction_type": "categorical",
        "features": {"numerical": ["amount", "age", "score"], "categorical": ["plan"]},
    })),
}
MULTI_PRED = {m: "prediction" for m in MULTI}


def _multi_event(model: str) -> Any:
    names = {"churn": ("age", "income", "plan"), "upsell": ("tenure", "spend", "tier")}.get(model)
    # (NUL, U+001F and U+FFFF send a batch to the per-record path: see may_hold_unsafe_text)
    base = {"event_id": st.text(st.characters(exclude_characters="\x00\x1f\uffff", exclude_categories=("Cs",)), min_size=1, max_size=8), "model": st.just(model),
            "ts": st.integers(0, REC_TS)}  # one form per batch: mixed forms take the per-record path
    if names is None:
        return st.fixed_dictionaries({
            **base, "features": st.fixed_dictionaries({"amount": num, "age": num, "score": num, "plan": cat}),
            "prediction": cat,
        }, optional={"version": st.sampled_from(["v1", "v2"])})
    return st.fixed_dictionaries({
        **base, "features": st.fixed_dictionaries({names[0]: num, names[1]: num, names[2]: cat}), "prediction": num,
    }, optional={"version": st.sampled_from(["v1", "v2"])})


multi_event = st.sampled_from(sorted(MULTI)).flatmap(_multi_event)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(multi_event, min_size=1, max_size=30), st.data())
def test_models_read_in_one_pass_equal_the_per_record_path(events: list[dict[str, Any]], data: Any) -> None:
    """Models of one shape are decoded together and split; the columns each model gets
    (names, values, row order, partitions, offsets) are those of the per-record path."""
    recs = [Rec("t", data.draw(st.integers(0, 2)), i, REC_TS, orjson.dumps(e)) for i, e in enumerate(events)]
    dec = BatchDecoder(MULTI, prediction_names=MULTI_PRED, max_message_bytes=10_000)
    assert dec.typed is not None
    typed = dec.typed.decode(recs, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
    builders: dict[str, Any] = {}
    for r in recs:
        dec._one(r, r.value, builders, NOW_MS)
    slow = {m: b.build() for m, b in builders.items()}
    assert typed is not None, "every one of these batches is well-formed"
    assert list(typed) == list(slow), "models in order of first appearance"
    _eq(typed, slow)
    for m in typed:
        np.testing.assert_array_equal(typed[m].partition, slow[m].partition)
        assert typed[m].model == m


def test_churn_and_upsell_share_a_layout_and_fraud_has_its_own() -> None:
    dec = BatchDecoder(MULTI, prediction_names=MULTI_PRED)
    assert dec.typed is not None
    assert dec.typed._layout_of.tolist() == [0, 0, 1]


#: churn whose scores are probabilities, and upsell: the same shape of message, scores of any size
PROB = {"churn": replace(SCHEMA, probabilities=True), "upsell": MULTI["upsell"]}
#: rounding overshoots (a softmax's 1.0000000000000002) are probabilities, taken as 0 or 1
OVERSHOOTS = [1.0000000000000002, -1e-17, 1 + 5e-10, -5e-10]
score = st.one_of(st.none(), st.sampled_from([0, 1, 0.0, 1.0, 0.5, -0.0, 1.5, -0.25, 1e-300, 1.0000001, 7, *OVERSHOOTS]),
                  st.floats(-2, 3, allow_nan=False, width=32))


def _prob_event(model: str) -> Any:
    names = ("age", "income", "plan") if model == "churn" else ("tenure", "spend", "tier")
    return st.fixed_dictionaries({
        "event_id": st.text(st.characters(exclude_characters="\x00\x1f\uffff", exclude_categories=("Cs",)),
                            min_size=1, max_size=8),
        "model": st.just(model), "ts": st.integers(0, REC_TS),
        "features": st.fixed_dictionaries({names[0]: num, names[1]: num, names[2]: cat}), "prediction": score,
    })


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["churn", "upsell"]).flatmap(_prob_event), min_size=1, max_size=20))
def test_a_probability_outside_0_1_is_a_dead_letter_on_every_path(events: list[dict[str, Any]]) -> None:
    """A model whose scores are probabilities: each score outside [0, 1] is a dead letter
    ``out_of_range`` naming the field and value, the rest decode as they did; the typed and
    dict fast paths take a batch only when no score is out of range, and then give the
    per-record path's columns. A model of the same shape without probabilities keeps any score."""
    recs = [Rec("t", 0, i, REC_TS, orjson.dumps(e)) for i, e in enumerate(events)]
    bad = {i for i, e in enumerate(events)
           if e["model"] == "churn" and e["prediction"] is not None and not -1e-9 <= e["prediction"] <= 1 + 1e-9}
    batches, dead = BatchDecoder(PROB, prediction_names=MULTI_PRED, max_message_bytes=10_000).decode(recs, now=NOW)
    assert {d.offset: d.reason for d in dead} == {
        i: f"out_of_range: prediction {float(events[i]['prediction'])!r} outside [0, 1]"
           " (the model's scores are probabilities)" for i in bad
    }
    if "churn" in batches:  # overshoots taken as 0 or 1: log loss and Brier see probabilities
        kept = [e["prediction"] for i, e in enumerate(events) if e["model"] == "churn" and i not in bad]
        np.testing.assert_array_equal(batches["churn"].columns["prediction"],
                                      [np.nan if p is None else min(max(float(p), 0.0), 1.0) for p in kept])
    good = [r for i, r in enumerate(recs) if i not in bad]
    dec = BatchDecoder(PROB, prediction_names=MULTI_PRED, max_message_bytes=10_000)
    builders: dict[str, Any] = {}
    for r in good:
        dec._one(r, r.value, builders, NOW_MS)
    slow = {m: b.build() for m, b in builders.items()}
    _eq(batches, slow)
    assert dec.typed is not None
    for recs_ in (recs, good) if good else (recs,):
        typed = dec.typed.decode(recs_, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
        fast = decode_fast(recs_, PROB, MULTI_PRED, "model", 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
        if bad and recs_ is recs:
            assert typed is None and fast is None
        else:
            assert typed is not None and fast is not None
            _eq(typed, slow)
            _eq(fast, slow)


def test_a_probability_models_layout_is_not_shared_with_a_margin_models() -> None:
    """Models of one shape are read in one pass by the first one's plan: a probability model
    must not lend its range check to a margin model, nor the other way round."""
    dec = BatchDecoder(PROB, prediction_names=MULTI_PRED)
    assert dec.typed is not None and dec.typed._layout_of.tolist() == [0, 1]
    recs = [Rec("t", 0, 0, REC_TS, orjson.dumps({**GOOD, "ts": REC_TS, "model": "upsell", "prediction": 2.5,
                                                 "features": {"tenure": 1, "spend": 2, "tier": "a"}})),
            Rec("t", 0, 1, REC_TS, orjson.dumps({**GOOD, "ts": REC_TS, "prediction": True})),
            Rec("t", 0, 2, REC_TS, orjson.dumps({**GOOD, "ts": REC_TS, "prediction": -1}))]
    batches, dead = dec.decode(recs, now=NOW)
    assert batches["upsell"].columns["prediction"].tolist() == [2.5]
    assert batches["churn"].columns["prediction"].tolist() == [1.0]
    assert [(d.offset, d.reason) for d in dead] == [
        (2, "out_of_range: prediction -1.0 outside [0, 1] (the model's scores are probabilities)")]


def test_whether_scores_are_probabilities_is_the_models_setting_or_its_references() -> None:
    """``performance.probabilities`` when set; else the reference's prediction column (every
    finite score in [0, 1]; none or no column: undecided); only for score classifiers
    with performance enabled."""
    from monitor.ingest.schema import scores_are_probabilities  # noqa: PLC0415

    def model(**perf: Any) -> ModelConfig:
        return ModelConfig.model_validate({
            "name": "m", "reference": "ref.csv", "features": {"numerical": ["age"]},
            "performance": {"enabled": True, **perf},
        })

    probs, margins = np.array([0.0, 0.3, np.nan, 1.0]), np.array([0.2, -1.5, 3.0])
    assert scores_are_probabilities(model(), {"prediction": probs}) is True
    assert scores_are_probabilities(model(), {"prediction": margins}) is False
    assert scores_are_probabilities(model(), {"prediction": np.array([np.nan])}) is None
    assert scores_are_probabilities(model(), {}) is None
    assert scores_are_probabilities(model(probabilities=False), {"prediction": probs}) is False
    assert scores_are_probabilities(model(probabilities=True), {"prediction": margins}) is True
    assert scores_are_probabilities(MODEL, {"prediction": probs}) is None  # performance off


def test_an_unknown_model_differing_only_in_case_names_the_configured_one() -> None:
    """A producer sending "Churn" (or "churn ") for the configured churn got only
    "unknown_model: Churn", read as a foreign model; other names are left as they were."""
    names = ["Churn", " churn ", "CHURN", "fraud", "churn-v2"]
    recs = [Rec("t", 0, i, REC_TS, orjson.dumps({**GOOD, "model": m})) for i, m in enumerate(names)]
    batches, dead = decoder().decode([*recs, Rec("t", 0, 9, REC_TS, orjson.dumps(GOOD))], now=NOW)
    assert batches["churn"].event_id.tolist() == [GOOD["event_id"]]
    hint = " (the config has 'churn': model names match exactly)"
    assert [d.reason for d in dead] == [
        f"unknown_model: Churn{hint}", f"unknown_model:  churn {hint}", f"unknown_model: CHURN{hint}",
        "unknown_model: fraud", "unknown_model: churn-v2",
    ]


def _ahead_event(model: str) -> Any:
    """``_multi_event`` with an event time up to an hour ahead of the earliest record timestamp."""
    return _multi_event(model).flatmap(lambda e: st.integers(0, REC_TS + HOUR_MS - 2000).map(lambda t: {**e, "ts": t}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(MULTI)).flatmap(_ahead_event), min_size=1, max_size=30), st.data())
def test_every_path_caps_the_watermark_times_at_the_record_timestamp_and_the_wall_clock(
    events: list[dict[str, Any]], data: Any,
) -> None:
    """Each row's watermark time is its event time capped at min(record timestamp, wall
    clock) (the wall clock alone without a record timestamp), on the typed path (models
    read in one pass and split), the dict path and the per-record path alike; ``wm_ms`` is
    None when no row is ahead (the event times themselves)."""
    stamps = [data.draw(st.one_of(st.none(), st.integers(REC_TS - 1000, NOW_MS + HOUR_MS))) for _ in events]
    recs = [Rec("t", 0, i, s, orjson.dumps(e)) for i, (e, s) in enumerate(zip(events, stamps, strict=True))]
    dec = BatchDecoder(MULTI, prediction_names=MULTI_PRED, max_message_bytes=10_000)
    assert dec.typed is not None
    typed = dec.typed.decode(recs, 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
    fast = decode_fast(recs, MULTI, MULTI_PRED, "model", 10_000, now_ms=NOW_MS, max_future_skew_ms=HOUR_MS)
    builders: dict[str, Any] = {}
    for r in recs:
        dec._one(r, r.value, builders, NOW_MS)
    slow = {m: b.build() for m, b in builders.items()}
    assert typed is not None and fast is not None, "every event is within the hour allowed"
    for m, b in slow.items():
        want = [min(int(e["ts"]), NOW_MS if s is None else min(s, NOW_MS))
                for e, s in zip(events, stamps, strict=True) if e["model"] == m]
        ts = [int(e["ts"]) for e in events if e["model"] == m]
        for got in (typed[m], fast[m], b):
            assert got.wm_times().tolist() == want
            assert (got.wm_ms is None) == (want == ts)
            assert got.take(got.ts_ms >= 0).wm_times().tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=30), st.integers(0, 30))
def test_vouch_is_the_second_highest_time_seen_whatever_the_cuts(times: list[int], cut: int) -> None:
    """The clock before each row is the second-highest of the times before it (``NO_TIME``
    until two rows came), whether the rows come in one batch or two."""
    expected = [sorted(times[:i])[-2] if i >= 2 else NO_TIME for i in range(len(times) + 1)]
    front, clock, got = NO_TIME, NO_TIME, []
    for part in (times[:cut], times[cut:]):
        before, front, clock = vouch(np.array(part, dtype=np.int64), front, clock)
        got += before.tolist()
    assert got + [clock] == expected
    assert front == (max(times) if times else NO_TIME)
