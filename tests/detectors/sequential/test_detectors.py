from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors import CUSUM, PageHinkley


def _stream(seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0.1, 0.02, 200), rng.normal(0.3, 0.02, 100)]


def _first(det, xs) -> int:
    return next(i for i, x in enumerate(xs) if det.update(x).drift_detected)


def test_page_hinkley_exact_detection_index():
    assert _first(PageHinkley(min_instances=30, delta=0.005, threshold=1.0), _stream()) == 205


def test_cusum_exact_detection_index():
    # sigma learned from 30 values is noisy: a slack of one sigma avoids early false alarms
    assert _first(CUSUM(k=1.0, h=5.0, min_instances=30), _stream()) == 200


def test_no_false_alarm_on_a_stable_stream():
    xs = np.random.default_rng(1).normal(0.1, 0.02, 2000)
    ph = PageHinkley(threshold=1.0)
    assert not any(ph.update(x).drift_detected for x in xs)
    c = CUSUM(k=1.0, h=8.0)
    assert not any(c.update(x).drift_detected for x in xs)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_page_hinkley_modes(mode):
    rng = np.random.default_rng(0)
    down = np.r_[rng.normal(1.0, 0.01, 100), rng.normal(0.5, 0.01, 50)]
    ph = PageHinkley(min_instances=10, threshold=1.0, mode=mode)
    hits = [ph.update(x).drift_detected for x in down]
    assert any(hits) is (mode == "down")


@pytest.mark.parametrize(
    "factory",
    [lambda: PageHinkley(min_instances=30, threshold=1.0), lambda: CUSUM(min_instances=30)],
)
def test_state_round_trip_continues_identically(factory):
    xs = _stream(7)
    a = factory()
    for x in xs[:150]:
        a.update(x)
    saved = json.loads(json.dumps(a.state()))  # must survive JSON
    b = type(a).from_state(saved)
    assert b.state() == a.state()
    rest_a = [a.update(x).drift_detected for x in xs[150:]]
    rest_b = [b.update(x).drift_detected for x in xs[150:]]
    assert rest_a == rest_b and any(rest_a)


def test_reset_and_nonfinite_and_validation():
    ph = PageHinkley(min_instances=1, threshold=0.1)
    ph.update(1.0)
    before = ph.state()
    ph.update(float("nan"))
    assert ph.state() == before
    ph.reset()
    assert ph.n == 0 and not ph.drift_detected
    c = CUSUM(target=0.0, sigma=1.0, h=1.0)
    assert (
        c.update(5.0).drift_detected and not c.update(0.0).drift_detected
    )  # sums restart after a signal
    with pytest.raises(ValueError):
        PageHinkley(mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CUSUM(sigma=0.0)
    with pytest.raises(ValueError):
        CUSUM.from_state(PageHinkley().state())


# --------------------------------------------------------------------------- CUSUM's scale


def test_cusum_keeps_learning_through_a_constant_warmup():
    # drift_share of 5 columns, 0 in every warm-up window: no scale to learn yet
    c = CUSUM(k=0.5, h=5.0, min_instances=20)
    for _ in range(30):
        c.update(0.0)
    assert c.learning and c.statistic == 0.0
    c.update(0.2)  # the first different value joins the warm-up and ends it
    assert not c.learning and not c.drift_detected
    # 30 zeros and one 0.2: mean 0.2/31, sd 0.0359 < half the 0.2 step, so sigma 0.1 and
    # the slack half a step, one sigma
    c.update(0.2)
    assert not c.drift_detected
    assert c.statistic == pytest.approx((0.2 - 0.2 / 31) / 0.1 - 1.0)
    # one-column blips five windows apart never add up to a change
    hits = [c.update(x).drift_detected for x in ([0.0] * 5 + [0.2]) * 50]
    assert not any(hits)
    # one more drifted column in every window does: 0.935 sigmas a window, at the sixth
    # 0.2 in a row (the last blip above is the first)
    assert _first(c, [0.2] * 10) == 4


def test_cusum_sigma_is_at_least_the_figures_resolution():
    c = CUSUM(k=0.5, h=5.0, min_instances=20)
    for x in [0.0] * 19 + [0.2]:
        c.update(x)
    # learned sd: sqrt(0.2**2 * 19/20 / 19) = 0.0447; the 0.2 step floors it at 0.1, and
    # the slack at half a step (0.1, one sigma)
    c.update(0.2)
    assert c.statistic == pytest.approx((0.2 - 0.01) / 0.1 - 1.0)
    # a continuous figure's step is tiny: its learned sd stands
    rng = np.random.default_rng(3)
    warm = rng.normal(0.0, 1.0, 20)
    d = CUSUM(k=0.5, h=5.0, min_instances=20)
    for x in warm:
        d.update(x)
    d.update(3.0)
    assert d.statistic == pytest.approx((3.0 - warm.mean()) / warm.std(ddof=1) - 0.5)
    # a given sigma is used as it is, and k with it, whatever the steps
    g = CUSUM(k=0.5, h=5.0, sigma=0.05, min_instances=20)
    for x in [0.0] * 19 + [0.2]:
        g.update(x)
    g.update(0.2)
    assert g.statistic == pytest.approx((0.2 - 0.01) / 0.05 - 0.5)


def _drift_share(rng: np.random.Generator, n: int, columns: int = 20, stuck: int = 0) -> np.ndarray:
    """Share of ``columns`` drifted, each (but the ``stuck`` ones, always drifted) at 1 %
    a window, as columns of stationary windows are at ``alpha_column`` 0.01."""
    return (rng.binomial(columns - stuck, 0.01, n) + stuck) / columns


def test_cusum_on_a_stationary_drift_share_is_quiet_and_finds_a_column_that_stays_drifted():
    # mostly 0, one column in 17 % of the windows, two in 1.6 %: a 20-window warm-up
    # underestimates its sd and at the step/sqrt(12) floor one column was 3.3 sigmas:
    # 264 alarms over these 8,000 windows (33 per 1,000) before
    alarms, found = 0, []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        c = CUSUM(k=0.5, h=5.0, min_instances=20, mode="up")
        alarms += sum(c.update(x).drift_detected for x in _drift_share(rng, 2020))
        found.append(_first(c, _drift_share(rng, 20, stuck=1)))
    assert alarms <= 12  # 1.5 per 1,000
    assert max(found) <= 5  # a column that stays drifted: within six windows


def test_cusum_state_saved_before_the_step_was_kept_restores():
    old = {"type": "CUSUM", "settings": CUSUM(min_instances=20).state()["settings"],
           "n": 20, "mean": 0.0, "m2": 0.0, "s_hi": 0.0, "s_lo": 0.0, "drift": False}
    c = CUSUM.from_state(old)
    assert c.learning  # a constant warm-up: learns on
    assert not c.update(0.2).drift_detected and not c.learning
    learned = {**old, "n": 20, "mean": 0.01, "m2": 0.2**2 * 19 / 20}
    d = CUSUM.from_state(learned)  # step unknown: the sigma it learned, as before
    d.update(0.2)
    assert d.statistic == pytest.approx((0.2 - 0.01) / (0.2**2 * 19 / 20 / 19) ** 0.5 - 0.5)


@pytest.mark.parametrize("factory", [lambda: CUSUM(min_instances=20), lambda: PageHinkley(min_instances=20)])
@pytest.mark.parametrize("where", ["warmup", "after"])
@pytest.mark.parametrize("huge", [1e200, 1.7e308, -1.7e308])
def test_a_huge_finite_figure_leaves_a_state_that_round_trips(factory, where, huge):
    """A figure can be finite and huge (a regression window's MAE with one label of 1e200;
    a distance of a feature value of 1e300). Its square (the warm-up's variance) or its
    z-score overflowed to infinity, and ``state()`` held it: JSON has no infinity (orjson
    writes null), so the stored state failed ``from_state`` on every later window, and with
    it the rules of every later window of the model. The sums stay finite now: the state is
    valid JSON, round-trips, and the detector goes on."""
    import orjson

    base = [0.05 + 0.001 * (i % 5) for i in range(30)]
    xs = ([0.05, huge] + base) if where == "warmup" else (base + [huge] + base[:5])
    det = factory()
    for x in xs:
        det.update(x)
        state = det.state()
        back = type(det).from_state(orjson.loads(orjson.dumps(state)))
        assert back.state() == state
        det = back
    assert math.isfinite(det.statistic)
