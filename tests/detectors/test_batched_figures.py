"""Figures computed for many columns at once equal the one-column computations bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detectors import ColumnSpec, column_drift, data_quality, dataset_drift, prepare_reference
from detectors._columns import CurrentColumn
from detectors.drift.binned import jensenshannon, jensenshannon_many
from detectors.drift.distance import (
    ROW_WEIGHTS_MAX,
    _asked_once,
    _pairing,
    _row_weights,
    _sorted_distances,
    wasserstein,
    wasserstein_many,
)
from detectors.quality import _numerical_quality


def reference(rng: np.random.Generator, k: int, n: int):
    cols = {f"x{i}": rng.normal(i * 3.0, 1.0 + i, n).round(i % 4) for i in range(k)}
    return prepare_reference(cols, [ColumnSpec(c, "numerical") for c in cols])


@pytest.mark.parametrize(("n1", "n2"), [(2000, 100), (1500, 1500), (1001, 997), (1200, 1), (1, 5)])
def test_wasserstein_many_is_wasserstein_per_column(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1 * 7 + n2)
    prep = reference(rng, 6, n1)
    refs = [prep[c] for c in prep.columns]
    curs = [rng.normal(0.5, 2.0, n2).round(2) for _ in refs]
    got = wasserstein_many(refs, curs)
    want = [
        wasserstein(r, CurrentColumn("numerical", c), "evidently")
        for r, c in zip(refs, curs, strict=True)
    ]
    assert got == want  # exact, not approximately


def categorical_reference(rng: np.random.Generator, k: int, n: int, n_cats: int):
    cats = np.array([f"v{i}" for i in range(n_cats)], dtype=object)
    cols = {f"c{i}": rng.choice(cats, n, p=rng.dirichlet(np.ones(n_cats))) for i in range(k)}
    return prepare_reference(cols, [ColumnSpec(c, "categorical") for c in cols]), cats


@pytest.mark.parametrize(("n_cats", "n1", "n2"), [(5, 2000, 100), (40, 1500, 1500), (300, 3000, 700), (1, 1200, 3)])
def test_jensenshannon_many_is_jensenshannon_per_column(n_cats: int, n1: int, n2: int) -> None:
    rng = np.random.default_rng(n_cats * 11 + n2)
    prep, cats = categorical_reference(rng, 5, n1, n_cats)
    refs = [prep[c] for c in prep.columns]
    curs = [CurrentColumn("categorical", rng.choice(cats, n2), r) for r in refs]
    got = jensenshannon_many(refs, curs)
    want = [jensenshannon(r, c, "evidently") for r, c in zip(refs, curs, strict=True)]
    assert got == want  # exact, not approximately


def test_dataset_drift_batches_categorical_columns_by_their_categories() -> None:
    rng = np.random.default_rng(4)
    prep, cats = categorical_reference(rng, 5, 1500, 6)
    cur = {c: rng.choice(cats, 120) for c in prep.columns}
    cur["c1"][:4] = "unseen"  # one more category than the others: scored alone
    cur["c2"][5] = None
    cur["c3"][:3] = ["new", "newer", None]
    got = dataset_drift(prep, cur)
    assert [c.test for c in got.columns] == ["jensenshannon"] * 5
    for c in got.columns:
        alone = dataset_drift(prep, {c.column: cur[c.column]}, columns=[c.column]).columns[0]
        assert (c.test, c.score, c.drifted, c.current_n) == (alone.test, alone.score, alone.drifted, alone.current_n)


def test_dataset_drift_batches_only_what_it_can() -> None:
    rng = np.random.default_rng(3)
    prep = reference(rng, 5, 1500)
    cur = {c: rng.normal(1.0, 3.0, 300) for c in prep.columns}
    cur["x1"] = np.append(cur["x1"][:-3], [np.nan, np.inf, -np.inf])  # fewer finite values: alone
    got = dataset_drift(prep, cur)
    for c in got.columns:
        alone = dataset_drift(prep, {c.column: cur[c.column]}, columns=[c.column]).columns[0]
        assert (c.test, c.score, c.drifted) == (alone.test, alone.score, alone.drifted)


def test_quality_of_many_numerical_columns_is_per_column() -> None:
    rng = np.random.default_rng(5)
    prep = reference(rng, 4, 1200)
    cur = {c: rng.normal(5.0, 6.0, 200) for c in prep.columns}
    cur["x0"][:7] = np.nan
    cur["x2"][3] = np.inf
    cur["x3"] = cur["x3"][:150]  # another length: computed alone
    got = data_quality(prep, cur)
    for q in got.columns:
        ref = prep[q.column]
        n, missing, oor = _numerical_quality(cur[q.column], ref.min, ref.max)
        assert (q.rows, q.missing_count, q.out_of_range_share) == (n, missing, oor)
    empty = data_quality(prep, {c: np.full(10, np.nan) for c in prep.columns})
    assert all(np.isnan(q.out_of_range_share) and q.missing_share == 1.0 for q in empty.columns)


def test_dataset_drift_on_threads_is_the_same() -> None:
    rng = np.random.default_rng(9)
    prep = reference(rng, 4, 1200)
    cur = {c: rng.normal(2.0, 3.0, 9000) for c in prep.columns}  # above the batch limit
    assert dataset_drift(prep, cur, workers=2) == dataset_drift(prep, cur)


@pytest.mark.parametrize("multiple_testing", [None, "bh"])
def test_also_columns_are_scored_alone_and_stay_out_of_the_share(multiple_testing) -> None:
    rng = np.random.default_rng(12)
    prep = reference(rng, 5, 2000)
    cur = {c: rng.normal(2.0, 1.0 + i, 100) for i, c in enumerate(prep.columns)}
    features = ["x0", "x1", "x2", "x3"]
    got = dataset_drift(prep, cur, columns=features, multiple_testing=multiple_testing, also=["x4"])
    without = dataset_drift(prep, cur, columns=features, multiple_testing=multiple_testing)
    assert dataclasses.replace(got, also=()) == without  # the share and its columns as without it
    assert got.also == (column_drift(prep, "x4", cur["x4"]),)  # x4 as alone, bit for bit


def _broadcast_distances(rs: np.ndarray, cs: np.ndarray) -> np.ndarray:
    """_sorted_distances as it was, each row's weights broadcast over the k rows."""
    n1, n2 = rs.shape[1], cs.shape[1]
    c_idx, w_ref, r_idx, w_cur, scale, _, _ = _pairing(n1, n2)
    t_ref = np.abs(rs - cs.take(c_idx, axis=1)) * w_ref
    t_cur = np.abs(rs.take(r_idx, axis=1) - cs) * w_cur
    return (np.add.reduce(t_ref, axis=1) + np.add.reduce(t_cur, axis=1)) / scale


@pytest.mark.parametrize(("k", "n1", "n2"), [(1, 2000, 100), (21, 2000, 100), (6, 997, 1001), (200, 2000, 1000)])
def test_row_weights_give_the_broadcast_products(k: int, n1: int, n2: int) -> None:
    """The weights repeated per row (numpy's contiguous loop) give bit for bit the distances
    of the one weight row broadcast over the rows. Rows repeat from the second window of a
    size on (one row: a view), never past ROW_WEIGHTS_MAX weights."""
    rng = np.random.default_rng(k * 31 + n1)
    rs = np.sort(rng.normal(0.0, 1.0, (k, n1)).round(3), axis=1)
    cs = np.sort(rng.normal(0.2, 1.5, (k, n2)).round(2), axis=1)
    want = _broadcast_distances(rs, cs).tolist()
    _asked_once.clear()
    shapes = []
    for _ in range(2):
        w_ref, w_cur = _row_weights(n1, n2, k)
        shapes.append((w_ref.shape, w_cur.shape))
        assert _sorted_distances(rs, cs).tolist() == want
    repeated = k == 1 or k * (n1 + n2) <= ROW_WEIGHTS_MAX
    assert shapes[0] == (((1, n1), (1, n2)) if k == 1 else ((n1,), (n2,)))
    assert shapes[1] == (((k, n1), (k, n2)) if repeated else ((n1,), (n2,)))
