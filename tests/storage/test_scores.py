"""Drift scores named by their statistic, and the score kinds kept in step with the registry."""

from __future__ import annotations

import math

from detectors.drift import all_tests
from storage.scores import DISTANCE_TESTS, P_VALUE_TESTS, drifted_column_text, score_text


def test_every_registered_test_and_alias_is_listed_with_its_kind() -> None:
    # storage.scores stays light (the read commands import it), so it keeps its own list:
    # a test registered without being listed here would show its p-value as a distance
    names = {kind: {n for t in all_tests() if t.score_kind == kind for n in (t.name, *t.aliases)}
             for kind in ("p_value", "distance")}
    assert names == {"p_value": P_VALUE_TESTS, "distance": DISTANCE_TESTS}


def test_a_p_value_and_a_distance_read_differently() -> None:
    assert drifted_column_text("amount", "ks", 1.14e-19) == "amount (ks p=1.1e-19)"
    assert drifted_column_text("income", "wasserstein", 0.3123) == "income (wasserstein 0.312)"
    assert score_text("chisquare", 0.0) == "chisquare p=0"
    assert score_text("ed", math.inf) == "ed inf"
    # not computed, a name from another build, no test at all
    assert score_text("ks", None) == "ks n/a"
    assert score_text("future_test", 0.5) == "future_test 0.5"
    assert score_text(None, 0.5) == "0.5"
    assert drifted_column_text("plan", None, None) == "plan"
