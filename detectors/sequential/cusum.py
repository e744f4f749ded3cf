"""Two-sided tabular CUSUM for a shift in the mean of a stream."""

from __future__ import annotations

import math
from typing import Any, Literal

from detectors.sequential._bound import bounded

Mode = Literal["up", "down", "both"]


class CUSUM:
    """Tabular CUSUM (Page, 1954; Montgomery, *Statistical Quality Control*, ch. 9).

    The in-control mean ``target`` and standard deviation ``sigma`` are given,
    or estimated from the first ``min_instances`` values (Welford). Then, per
    standardised value ``z = (x - target) / sigma``::

        s_hi = max(0, s_hi + z - k)      # evidence of an increase
        s_lo = max(0, s_lo - z - k)      # evidence of a decrease

    and a change is signalled when either exceeds ``h`` (only ``s_hi`` with
    ``mode="up"``, only ``s_lo`` with ``mode="down"``). ``k`` (slack, in
    sigmas; 0.5 detects a one-sigma shift fastest) and ``h`` (decision
    interval, in sigmas; 4–5 is usual) are the textbook settings. After a
    detection the sums restart from zero; the in-control estimates are kept
    (call :meth:`reset` to re-learn them).

    >>> c = CUSUM(target=0.0, sigma=1.0, k=0.5, h=4.0)
    >>> series = [0.0] * 10 + [2.0] * 10
    >>> next(i for i, x in enumerate(series) if c.update(x).drift_detected)
    12

    Non-finite values are ignored; values beyond ±1e100 count as ±1e100
    (:data:`detectors.sequential._bound.LIMIT`), so the sums stay finite.

    The learned sigma needs a scale the warm-up can show:

    - **a constant warm-up gives none**: while every value seen is the same,
      the detector keeps learning past ``min_instances`` (``learning`` stays
      True, the statistic 0); the first different value joins the warm-up and
      ends it. (Before, sigma was floored at 1e-12: a figure such as
      ``drift_share`` that was 0 in every warm-up window then signalled on the
      first window with one drifted column.)
    - **a figure that moves in steps is measured in steps**: ``step`` is the
      smallest non-zero change between consecutive warm-up values (a share of
      ``m`` columns moves by ``1/m``; a continuous figure's step is tiny and
      neither bound below binds). With a learned sigma:

      - sigma is at least ``step / 2``, the largest standard deviation of a
        figure that sits on one of two neighbouring steps: a single one-step
        move is at most two sigmas above a level below it;
      - the reference value is at least half a step: ``k`` is raised to
        ``step / (2 * sigma)`` sigmas when that is more, as the textbook
        ``k = shift / 2`` for the smallest lasting shift such a figure can
        make, one step.

      Why: ``drift_share`` over stationary windows is mostly 0, one column
      now and then (16–25 % of the windows at ``alpha_column`` 0.01) and two
      or three columns rarely (about 3 %). Twenty warm-up windows rarely hold
      one of the rare ones, so the sd they give is too small (0.011–0.020
      against 0.024–0.025 over the next 400 windows of 20 columns), and at
      ``step / sqrt(12)`` (the floor before) one drifted column was 3.3
      sigmas: two such windows close together, or one of two columns,
      signalled. That was 26 CUSUM alarms per 1,000 stationary windows at
      ``k=0.5, h=5``; with both bounds, 6 (bench/detection.py). The price: a
      column that stays drifted is signalled after about five windows, not
      two or three.

    A given ``sigma`` is used as it is, and ``k`` with it.
    """

    def __init__(
        self,
        k: float = 0.5,
        h: float = 5.0,
        target: float | None = None,
        sigma: float | None = None,
        min_instances: int = 30,
        mode: Mode = "both",
    ) -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError(f"mode must be 'up', 'down' or 'both', got {mode!r}")
        if k < 0 or h <= 0 or min_instances < 2:
            raise ValueError("need k >= 0, h > 0 and min_instances >= 2")
        if sigma is not None and sigma <= 0:
            raise ValueError("sigma must be > 0")
        self.k = float(k)
        self.h = float(h)
        self.target = None if target is None else float(target)
        self.sigma = None if sigma is None else float(sigma)
        self.min_instances = int(min_instances)
        self.mode: Mode = mode
        self.reset()

    def reset(self) -> None:
        """Forget the stream, including learned in-control estimates."""
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._s_hi = 0.0
        self._s_lo = 0.0
        self._drift = False
        #: last warm-up value and the smallest non-zero change between consecutive ones
        self._last: float | None = None
        self._step = 0.0

    @property
    def drift_detected(self) -> bool:
        """Whether the last ``update`` signalled a change."""
        return self._drift

    @property
    def statistics(self) -> tuple[float, float]:
        """Current (s_hi, s_lo), in sigmas."""
        return self._s_hi, self._s_lo

    @property
    def statistic(self) -> float:
        """The sum the ``mode`` watches (the larger of both for ``"both"``), in sigmas;
        compared with ``h``. Read it after ``update``: the sums restart on the next one
        after a signal."""
        if self.mode == "up":
            return self._s_hi
        if self.mode == "down":
            return self._s_lo
        return max(self._s_hi, self._s_lo)

    @property
    def learning(self) -> bool:
        """True while the in-control mean/sigma are still being estimated."""
        return self._in_control() is None

    def _in_control(self) -> tuple[float, float, float] | None:
        """(target, sigma, slack ``k`` in sigmas) once known, else None."""
        mu = (
            self.target
            if self.target is not None
            else (self._mean if self._n >= self.min_instances else None)
        )
        if mu is None:
            return None
        if self.sigma is not None:
            return mu, self.sigma, self.k
        if self._n < self.min_instances or self._m2 <= 0.0:
            return None  # too few values, or all equal: no scale yet
        sd = math.sqrt(max(self._m2, 0.0) / (self._n - 1))
        sd = max(sd, self._step / 2.0, 1e-12)
        return mu, sd, max(self.k, self._step / (2.0 * sd))

    def update(self, x: float) -> CUSUM:
        """Add one value; returns ``self`` so calls chain."""
        if self._drift:
            self._s_hi = self._s_lo = 0.0
            self._drift = False
        x = float(x)
        if not math.isfinite(x):
            return self
        x = bounded(x)
        params = self._in_control()
        if params is None:  # still learning the in-control mean/sigma
            self._n += 1
            d = x - self._mean
            self._mean += d / self._n
            self._m2 += d * (x - self._mean)
            if self._last is not None and x != self._last:
                gap = abs(x - self._last)
                self._step = gap if self._step == 0.0 else min(self._step, gap)
            self._last = x
            return self
        mu, sd, k = params
        z = (x - mu) / sd
        self._s_hi = max(0.0, self._s_hi + z - k)
        self._s_lo = max(0.0, self._s_lo - z - k)
        up, down = self._s_hi > self.h, self._s_lo > self.h
        self._drift = (self.mode != "down" and up) or (self.mode != "up" and down)
        return self

    def state(self) -> dict[str, Any]:
        """Settings and state as a JSON-serialisable dict."""
        return {
            "type": "CUSUM",
            "settings": {
                "k": self.k,
                "h": self.h,
                "target": self.target,
                "sigma": self.sigma,
                "min_instances": self.min_instances,
                "mode": self.mode,
            },
            "n": self._n,
            "mean": self._mean,
            "m2": self._m2,
            "s_hi": self._s_hi,
            "s_lo": self._s_lo,
            "drift": self._drift,
            "last": self._last,
            "step": self._step,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CUSUM:
        """Rebuild a detector from :meth:`state`; it continues exactly where that one was."""
        if state.get("type") != "CUSUM":
            raise ValueError(f"not a CUSUM state: {state.get('type')!r}")
        det = cls(**state["settings"])
        det._n = int(state["n"])
        det._mean = float(state["mean"])
        det._m2 = float(state["m2"])
        det._s_hi = float(state["s_hi"])
        det._s_lo = float(state["s_lo"])
        det._drift = bool(state["drift"])
        if "step" in state:
            det._last = None if state["last"] is None else float(state["last"])
            det._step = float(state["step"])
        elif det._n and det._m2 <= 0.0:
            # saved before ``last``/``step`` were kept: a warm-up of variance 0 held one
            # repeated value (its mean), so it learns on as a fresh one would; any other
            # warm-up's step is unknown (0): its sigma stays the one it learned, unfloored
            det._last = det._mean
        return det

    def __repr__(self) -> str:
        return (
            f"CUSUM(k={self.k}, h={self.h}, target={self.target}, sigma={self.sigma}, "
            f"min_instances={self.min_instances}, mode={self.mode!r})"
        )
