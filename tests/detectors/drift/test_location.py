from __future__ import annotations

import math

import numpy as np
from scipy import stats

from tests.detectors.drift.helpers import score


def test_t_test_equals_scipy():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=300), rng.normal(0.2, size=90)
    assert score("t_test", ref, cur) == stats.ttest_ind(ref, cur).pvalue


def test_mann_whitney_is_one_sided_less_like_evidently():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=300), rng.normal(0.5, size=90)
    assert score("mannw", ref, cur) == stats.mannwhitneyu(ref, cur, alternative="less").pvalue
    assert score("mannw", ref, cur) < 0.01 < score("mannw", cur, ref)


def test_epps_singleton_equals_scipy_and_nan_on_zero_iqr():
    rng = np.random.default_rng(2)
    ref, cur = rng.normal(size=300), rng.normal(0.3, size=90)
    assert score("es", ref, cur) == stats.epps_singleton_2samp(ref, cur).pvalue
    assert math.isnan(score("es", np.ones(100), np.ones(50)))
    assert math.isnan(score("es", ref, cur[:4]))
