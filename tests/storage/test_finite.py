"""JSON of stored figures: non-finite floats are written as null, at any depth."""

from __future__ import annotations

import json
import math

from storage.finite import dumps_finite, finite


def test_non_finite_floats_become_null_at_any_depth() -> None:
    doc = {"a": math.inf, "b": [1.5, -math.inf, (math.nan, "x")], "c": {"d": {"e": math.nan}}, "f": 2}
    assert finite(doc) == {"a": None, "b": [1.5, None, [None, "x"]], "c": {"d": {"e": None}}, "f": 2}
    assert json.loads(dumps_finite(doc)) == {"a": None, "b": [1.5, None, [None, "x"]], "c": {"d": {"e": None}}, "f": 2}


def test_finite_documents_are_written_as_json_writes_them() -> None:
    doc = {"v": 0.1, "n": [1, 2.5e300], "s": "inf"}
    assert dumps_finite(doc, indent=2) == json.dumps(doc, indent=2)
