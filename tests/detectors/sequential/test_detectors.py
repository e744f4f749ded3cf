from __future__ import annotations

import json

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
