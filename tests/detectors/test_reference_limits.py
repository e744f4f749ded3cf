"""Columns whose calibrated thresholds the reference breaks: heavy tails, sparse tails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import prepare_reference
from detectors.reference_limits import (
    HEAVY_TAIL_INDEX,
    MIN_TAIL_ROWS,
    column_limits,
    sparse_tail,
    tail_index,
)
from detectors.spec import ColumnSpec

SIZES = (1_000, 10_000, 100_000)


def _draw(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    return {
        "normal": lambda: rng.normal(size=n),
        "uniform": lambda: rng.uniform(size=n),
        "exponential": lambda: rng.exponential(size=n),
        "t1.5": lambda: rng.standard_t(1.5, size=n),
        "pareto1.5": lambda: rng.pareto(1.5, size=n) + 1.0,
        "lognormal2": lambda: rng.lognormal(0.0, 2.0, size=n),
    }[name]()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dist", ["normal", "uniform", "exponential"])
def test_light_tails_never_count_as_heavy(dist: str, n: int) -> None:
    for seed in range(20 if n < 100_000 else 4):
        t = tail_index(np.sort(_draw(dist, np.random.default_rng(seed), n)))
        assert t.index > HEAVY_TAIL_INDEX + 0.3, (dist, n, seed, t)
        assert not t.heavy


@pytest.mark.parametrize("n", (10_000, 100_000))
@pytest.mark.parametrize("dist", ["t1.5", "pareto1.5", "lognormal2"])
def test_heavy_tails_are_found(dist: str, n: int) -> None:
    for seed in range(20 if n < 100_000 else 4):
        t = tail_index(np.sort(_draw(dist, np.random.default_rng(seed), n)))
        assert t.heavy, (dist, n, seed, t)
        assert 1.0 < t.index < HEAVY_TAIL_INDEX


@pytest.mark.parametrize("dist", ["t1.5", "pareto1.5", "lognormal2"])
def test_heavy_tails_at_1000_rows_mostly_found(dist: str) -> None:
    # 20 points of 1,000: a noisy estimate, most references still under the cut-off
    found = sum(tail_index(np.sort(_draw(dist, np.random.default_rng(s), 1_000))).heavy for s in range(20))
    assert found >= 15


def test_tail_index_edge_cases() -> None:
    small = tail_index(np.sort(np.random.default_rng(0).standard_t(1.5, MIN_TAIL_ROWS - 1)))
    assert math.isnan(small.index) and not small.heavy and small.points == 0
    constant = tail_index(np.zeros(1_000))
    assert constant.index == math.inf and not constant.heavy
    # a column mostly at one value with a few others: the deviations tie, no tail
    ties = tail_index(np.sort(np.r_[np.zeros(990), np.ones(10)]))
    assert not ties.heavy
    t = tail_index(np.sort(np.random.default_rng(1).standard_t(1.5, 10_000)))
    assert t.points == 200 and t.rows == 10_000


def test_sparse_tail_counts_rare_values() -> None:
    s = sparse_tail(np.array([50, 30, 10, 2, 1, 1, 0]), window_rows=200)
    assert (s.rows, s.distinct, s.singletons, s.doubletons) == (94, 6, 2, 1)
    assert s.singleton_share == pytest.approx(2 / 6)
    assert s.unseen_chance == pytest.approx(1 - (1 - 2 / 94) ** 200)
    assert s.sparse
    flat = sparse_tail(np.array([40, 41, 39, 40, 40]), window_rows=200)
    assert not flat.sparse and flat.unseen_chance == 0.0
    empty = sparse_tail(np.zeros(0, dtype=np.int64), window_rows=0)
    assert empty.singleton_share == 0.0 and empty.unseen_chance == 0.0 and not empty.sparse


def _limits(columns: dict[str, np.ndarray], methods: dict[str, str], window_rows: int = 1_000):
    specs = [ColumnSpec(c, "numerical" if v.dtype != object else "categorical", methods[c], None)
             for c, v in columns.items()]
    return column_limits(prepare_reference(columns, specs), window_rows)


def test_column_limits_name_heavy_wasserstein_columns_only() -> None:
    rng = np.random.default_rng(3)
    cols = {"amount": rng.pareto(1.5, 10_000) + 1, "age": rng.normal(size=10_000),
            "spread": rng.standard_t(1.5, 10_000)}
    limits = _limits(cols, {"amount": "wasserstein", "age": "wasserstein", "spread": "ks"})
    assert [(lim.column, lim.test) for lim in limits] == [("amount", "wasserstein")]
    assert limits[0].tail is not None and limits[0].tail.index < HEAVY_TAIL_INDEX and limits[0].sparse is None


def test_column_limits_name_sparse_chisquare_columns_only() -> None:
    rng = np.random.default_rng(4)
    counts = rng.geometric(0.3, 200).astype(float)  # a count column with a sparse tail
    cats = rng.choice(np.array(["a", "b", "c", "d", "e"], dtype=object), 200)  # every category common
    limits = _limits({"visits": counts, "colour": cats, "other": counts.copy()},
                     {"visits": "chisquare", "colour": "chisquare", "other": "jensenshannon"}, window_rows=200)
    assert [lim.column for lim in limits] == ["visits"]
    s = limits[0].sparse
    assert s is not None and s.singletons >= 1 and s.window_rows == 200 and s.unseen_chance > 0.5


@pytest.mark.parametrize("dist", ["poisson0.2", "zero_inflated_exponential"])
def test_light_tails_with_a_point_mass_never_count_as_heavy(dist: str) -> None:
    # counts of rare events (Poisson 0.2) and mostly-zero amounts (95 % zeros, the rest
    # exponential) are light-tailed; with 2 % of all rows as the tail, the estimate reached
    # into the point mass at the median and read 1.3-1.8 ("heavy") for every reference
    for seed in range(20):
        rng = np.random.default_rng(seed)
        if dist == "poisson0.2":
            x = rng.poisson(0.2, 10_000).astype(np.float64)
        else:
            x = np.where(rng.random(10_000) < 0.05, rng.exponential(size=10_000), 0.0)
        t = tail_index(np.sort(x))
        assert not t.heavy, (dist, seed, t)


def test_heavy_tail_behind_a_point_mass_is_still_found() -> None:
    # 80 % zeros, the rest Pareto 1.5: the tail of the values off the median is heavy
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = np.where(rng.random(10_000) < 0.2, rng.pareto(1.5, 10_000) + 1.0, 0.0)
        t = tail_index(np.sort(x))
        assert t.heavy, (seed, t)


def test_unseen_chance_of_a_column_of_distinct_values_is_one() -> None:
    s = sparse_tail(np.ones(1_000, dtype=np.int64), 500)
    assert s.sparse and s.singleton_share == 1.0 and s.unseen_chance == 1.0
