from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import ColumnSpec, multivariate_drift, prepare_domain_reference

SPECS = [ColumnSpec("a", "numerical"), ColumnSpec("b", "numerical"), ColumnSpec("c", "categorical")]


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(0)
    a = rng.normal(size=1500)
    ref = {
        "a": a,
        "b": a + rng.normal(scale=0.3, size=1500),
        "c": rng.choice(np.array(list("xyz"), dtype=object), 1500),
    }
    return prepare_domain_reference(ref, SPECS)


def test_broken_correlation_is_caught_though_marginals_match(prepared):
    rng = np.random.default_rng(1)
    a = rng.normal(size=1000)
    cur = {
        "a": a,
        "b": -a + rng.normal(scale=0.3, size=1000),
        "c": rng.choice(np.array(list("xyz"), dtype=object), 1000),
    }
    res = multivariate_drift(prepared, cur)
    assert res.drifted and res.roc_auc > 0.9


def test_same_distribution_is_near_half_and_deterministic(prepared):
    rng = np.random.default_rng(2)
    a = rng.normal(size=1000)
    cur = {
        "a": a,
        "b": a + rng.normal(scale=0.3, size=1000),
        "c": rng.choice(np.array(list("xyz"), dtype=object), 1000),
    }
    res = multivariate_drift(prepared, cur)
    assert not res.drifted and abs(res.roc_auc - 0.5) < 0.05
    assert multivariate_drift(prepared, cur) == res


def test_tiny_window_is_undefined(prepared):
    res = multivariate_drift(
        prepared, {"a": np.array([1.0]), "b": np.array([1.0]), "c": np.array(["q"], dtype=object)}
    )
    assert math.isnan(res.roc_auc) and res.drifted is False
