"""The label decoder: the columnar fast path and the per-record validator agree on valid input;
bad labels are dead letters with exact reasons."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.labels.decode import LabelDecoder, LabelSpec

Rec = namedtuple("Rec", "topic partition offset timestamp value")
NOW = datetime(2026, 11, 24, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def decoder(task: str = "classification") -> LabelDecoder:
    spec = LabelSpec("churn", task, "event_id", "label", "ts", 64, 16)
    return LabelDecoder({"churn": spec}, ["churn", "other"])


def recs(objs: list[object]) -> list[Rec]:
    return [Rec("labels", 0, i, NOW_MS, v if isinstance(v, bytes) else orjson.dumps(v)) for i, v in enumerate(objs)]


def test_fast_path_equals_per_record_path() -> None:
    objs = [{"event_id": f"e{i}", "model": "churn", "label": [1, "yes", 0][i % 3], "ts": NOW_MS - i * 1000} for i in range(50)]
    d = decoder()
    fast = d._fast(recs(objs), NOW_MS)
    assert fast is not None
    # a batch mixing epoch and RFC 3339 times takes the per-record path, with the same result
    mixed = [*objs, {"event_id": "iso", "model": "churn", "label": 2, "ts": "2026-11-23T10:00:00Z"}]
    assert d._fast(recs(mixed), NOW_MS) is None
    out, dead = d.decode(recs(mixed), now=NOW)
    assert dead == [] and out["churn"].event_id[:50] == fast["churn"].event_id and out["churn"].label[-1] == "2"
    slow, dead = {}, []
    for r in recs(objs):  # one at a time never takes the fast path's batch shortcuts
        out, dl = d.decode([r, Rec("labels", 0, 999, NOW_MS, b"x")], now=NOW)
        dead += dl
        for m, b in out.items():
            tgt = slow.setdefault(m, type(b)(m))
            for f in ("event_id", "label", "ts", "partition", "offset"):
                getattr(tgt, f).extend(getattr(b, f))
    assert [x.reason.split(":")[0] for x in dead] == ["not_json"] * len(objs)
    for f in ("event_id", "label", "ts", "partition", "offset"):
        assert getattr(fast["churn"], f) == getattr(slow["churn"], f), f
    assert fast["churn"].label[:3] == ["1", "yes", "0"]


@pytest.mark.parametrize(
    ("task", "obj", "reason"),
    [
        ("classification", {"event_id": "a", "model": "churn", "label": 0.5}, "bad_type: label expected a class (string, integer or boolean), got number 0.5"),
        ("classification", {"event_id": "a", "model": "churn", "label": {"x": 1}}, "bad_type: label expected a class (string, integer or boolean), got object"),
        ("classification", {"event_id": "a", "model": "churn", "label": "x" * 17}, "bad_type: label longer than 16 characters"),
        ("classification", {"event_id": "a", "model": "churn", "label": None}, "missing_field: label"),
        ("regression", {"event_id": "a", "model": "churn", "label": "3.2"}, "bad_type: label expected a number, got string"),
        ("regression", {"event_id": "a", "model": "churn", "label": True}, "bad_type: label expected a number, got boolean"),
        ("classification", {"event_id": "a", "model": "other", "label": 1}, "no_join: model other has no label join ([models.performance] enabled = false)"),
        ("classification", {"event_id": "a", "model": "ghost", "label": 1}, "unknown_model: ghost"),
        ("classification", {"model": "churn", "label": 1}, "missing_field: event_id"),
    ],
)
def test_bad_labels(task: str, obj: dict[str, object], reason: str) -> None:
    good = {"event_id": "g", "model": "churn", "label": 1, "ts": NOW_MS}
    out, dead = decoder(task).decode(recs([good, obj]), now=NOW)
    assert [d.reason for d in dead] == [reason]
    assert out["churn"].event_id == ["g"]


def test_booleans_and_integral_floats_are_classes() -> None:
    out, dead = decoder().decode(recs([
        {"event_id": "a", "model": "churn", "label": True, "ts": NOW_MS},
        {"event_id": "b", "model": "churn", "label": 1.0, "ts": NOW_MS},
    ]), now=NOW)
    assert dead == [] and out["churn"].label == ["true", "1"]


def test_a_nul_character_in_an_event_id_or_a_class_is_the_replacement_character() -> None:
    """PostgreSQL text cannot hold U+0000: in a label's event id and class it becomes U+FFFD
    (the fast path leaves the batch to the per-record one), as in predictions."""
    objs = [{"event_id": f"e{i}\u0000", "model": "churn", "label": "yes\u0000" if i % 2 else 1, "ts": NOW_MS - i}
            for i in range(10)]
    d = decoder()
    assert d._fast(recs(objs), NOW_MS) is None
    out, dead = d.decode(recs(objs), now=NOW)
    assert dead == []
    assert out["churn"].event_id == [f"e{i}\ufffd" for i in range(10)]
    assert out["churn"].label[:2] == ["1", "yes\ufffd"]


# -- hostile messages, generated ---------------------------------------------------------

_text = st.text(max_size=20) | st.sampled_from(["\x00", "\x1f", "\uffff", "", "1", "1.0", "x" * 17, "e" * 65])
_scalar = (st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
           | _text)
_value = st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3), max_leaves=5)
_ts = (st.none() | st.integers(-(2**63), 2**64) | st.integers(NOW_MS - 10**10, NOW_MS + 10**7) | _value
       | st.sampled_from(["2026-11-23T10:00:00Z", "9999-12-31T23:59:59.999-01:00", "0001-01-01T00:00:00+01:00"]))
_hostile = st.fixed_dictionaries({
    "model": st.sampled_from(["churn", "other", "x"]) | _value, "event_id": _value, "label": _value, "ts": _ts,
})
_valid = st.fixed_dictionaries({
    "model": st.just("churn"), "event_id": st.text(max_size=64),
    "label": st.integers(-5, 5) | st.text(max_size=16) | st.floats(-5, 5, allow_nan=False) | st.booleans(),
    "ts": st.integers(NOW_MS - 10**10, NOW_MS + 10**6) | st.none(),
})
_CODES = {"empty", "too_large", "not_json", "non_finite", "not_object", "missing_field", "bad_type",
          "unknown_model", "no_join"}


def _json(obj: object) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer past 64 bits: orjson reads none either
        return b'{"event_id":'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_valid, min_size=1, max_size=12) | st.lists(_hostile | _valid, min_size=1, max_size=12),
       st.sampled_from(["classification", "regression"]), st.just(NOW_MS) | st.integers(-5, 2**64))
def test_every_record_is_a_label_or_a_dead_letter_with_a_reason_code(
    events: list[dict[str, object]], task: str, record_ts: int
) -> None:
    """Whatever the messages: each one is a valid label (the fast path's batch equal to
    the per-record path's, one record at a time) or a dead letter with one of the reason
    codes; no exception's name for a reason, no NUL, no value past its cap."""
    records = [Rec("labels", 0, i, record_ts if record_ts < 2**63 else None, _json(e)) for i, e in enumerate(events)]
    d = decoder(task)
    out, dead = d.decode(records, now=NOW)
    assert sum(len(b) for b in out.values()) + len(dead) == len(records)
    for x in dead:
        assert x.reason.split(":")[0] in _CODES and "Error" not in x.reason, x.reason
    one_by_one: dict[str, list[tuple[object, ...]]] = {}
    alone_dead = []
    for r in records:  # with a bad record beside it: never the fast path
        o, dl = d.decode([r, Rec("labels", 0, 10**6, NOW_MS, b"x")], now=NOW)
        alone_dead += dl[:-1]
        for m, b in o.items():
            one_by_one.setdefault(m, []).extend(zip(b.event_id, b.label, b.ts, b.partition, b.offset, strict=True))
    assert {m: list(zip(b.event_id, b.label, b.ts, b.partition, b.offset, strict=True)) for m, b in out.items()} \
        == one_by_one
    assert [x.reason for x in dead] == [x.reason for x in alone_dead]
    for b in out.values():
        assert all(isinstance(e, str) and len(e) <= 64 and "\x00" not in e for e in b.event_id)
        assert all(0 <= t <= 253_402_300_799_999 for t in b.ts)
        if task == "regression":
            assert all(type(v) is float for v in b.label)
        else:
            assert all(type(v) is str and len(v) <= 16 and "\x00" not in v for v in b.label)


def test_a_label_for_a_model_differing_only_in_case_names_the_configured_one() -> None:
    objs = [{"event_id": "e1", "model": m, "label": 1, "ts": NOW_MS} for m in ("Churn", "nope")]
    out, dead = decoder().decode(recs(objs), now=NOW)
    assert out == {}
    assert [d.reason for d in dead] == [
        "unknown_model: Churn (the config has 'churn': model names match exactly)", "unknown_model: nope",
    ]
