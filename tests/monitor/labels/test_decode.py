"""The label decoder: the columnar fast path and the per-record validator agree on valid input;
bad labels are dead letters with exact reasons."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime

import orjson
import pytest

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
