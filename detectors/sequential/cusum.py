"""Two-sided tabular CUSUM for a shift in the mean of a stream."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from detectors.sequential._bound import bounded

Mode = Literal["up", "down", "both"]

#: a warm-up value farther from the warm-up's median than this many times the range of
#: its middle values is set aside (:func:`robust_baseline`); for a normal warm-up of 20
#: (middle: the 3rd to the 18th of 20) that is about 4.5 sd, 3 sd or more in 95 % of them
SPREADS = 2.0


def trim_count(min_instances: int) -> int:
    """Values left out at each end when measuring the warm-up's middle: one per ten
    warm-up values, at least one, but at most so many that two stay in the middle
    (0 for a warm-up of 2 or 3 values: nothing is robust there)."""
    return min(max(1, min_instances // 10), (min_instances - 2) // 2)


@dataclass(frozen=True)
class Baseline:
    """What a warm-up shows once its outliers are set aside (in the figure's units)."""

    mean: float
    #: sample standard deviation of the values kept; 0.0 when they are all equal
    sd: float
    #: smallest gap between distinct values kept; 0.0 when they are all equal
    step: float
    #: values kept and values set aside
    kept: int
    set_aside: int
    #: the warm-up's median, and how far from it a value may lie and be kept
    centre: float = 0.0
    reach: float = 0.0


def _at(pairs: list[tuple[float, int]], rank: int) -> float:
    """The value of 0-based ``rank`` in ascending ``(value, count)`` pairs."""
    for v, c in pairs:
        if rank < c:
            return v
        rank -= c
    raise IndexError(rank)


def robust_baseline(counts: Mapping[float, int], trim: int) -> Baseline:
    """Mean, sd and step of the warm-up ``counts`` (value -> times seen; at least
    ``2 * trim + 2`` values, all finite) without its outliers.

    The middle values are all but the ``trim`` lowest and ``trim`` highest; a value
    farther from the median than :data:`SPREADS` times their range is set aside. The
    middle values themselves are always kept, so a warm-up whose middle is constant
    keeps only that value (sd 0: no scale yet), however far the others are."""
    pairs = sorted((float(v), int(c)) for v, c in counts.items() if c > 0)
    n = sum(c for _, c in pairs)
    if n < 2 * trim + 2:
        raise ValueError(f"a warm-up of {n} values cannot leave {trim} out at each end")
    median = (_at(pairs, (n - 1) // 2) + _at(pairs, n // 2)) / 2.0
    reach = SPREADS * (_at(pairs, n - 1 - trim) - _at(pairs, trim))
    kept = [(v, c) for v, c in pairs if abs(v - median) <= reach]
    n_kept = sum(c for _, c in kept)
    mean = math.fsum(v * c for v, c in kept) / n_kept
    m2 = math.fsum(c * (v - mean) ** 2 for v, c in kept)
    sd = math.sqrt(m2 / (n_kept - 1)) if m2 > 0.0 else 0.0
    step = min((b - a for (a, _), (b, _) in zip(kept, kept[1:], strict=False)), default=0.0)
    return Baseline(mean, sd, step, n_kept, n - n_kept, median, reach)


def early_shift(head: list[float], centre: float, reach: float) -> int:
    """The side of a change early in a warm-up: the first values of the warm-up
    (``head``, in arrival order) are two or more in a row beyond ``reach`` of its
    ``centre`` on one side, i.e. set aside. +1 when they lay below it (the level
    rose after them), -1 above (it fell), 0 otherwise (a lone first value is an
    outlier as any other; with ``reach`` 0, a middle that never moved, nothing is
    a change: a figure that moves in steps often moves twice in a row)."""
    if reach <= 0.0:
        return 0
    sides = [0 if abs(v - centre) <= reach else (1 if v < centre else -1) for v in head]
    run = 0
    while run < len(sides) and sides[run] != 0 and sides[run] == sides[0]:
        run += 1
    return sides[0] if run >= 2 else 0


class CUSUM:
    """Tabular CUSUM (Page, 1954; Montgomery, *Statistical Quality Control*, ch. 9).

    The in-control mean ``target`` and standard deviation ``sigma`` are given,
    or estimated from the first ``min_instances`` values. Then, per
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

    The learned level and sigma resist a few outlier windows: the warm-up's values
    are kept (value -> count; dropped once learned), and at its end
    (:func:`robust_baseline`) any value farther from their median than
    :data:`SPREADS` times the range of the middle values (all but the ``trim``
    lowest and ``trim`` highest, ``trim`` = one per ten of ``min_instances``, at
    least one, leaving two in the middle: :func:`trim_count`) is set aside; the mean
    and sd are those of the rest. A warm-up that learns on past ``min_instances``
    holds at most ``2 * trim + 1`` distinct values, so its state stays small. (Before, the mean and sd of every warm-up value were kept: one window
    of flipped labels, or a figure of 1e90, inflated sigma so much that the rule
    never fired again for that instance.) On clean data nothing is set aside (a
    normal warm-up of 20 sets aside values beyond about 4.5 sd), so the estimates
    are the plain mean and sd.

    A change early in the warm-up looks like outliers: a lasting shift two or
    three values in makes the median and the middle values the new level, so the
    values before it are set aside and the shift is the baseline (plain CUSUM
    signals it only for ``k`` below about 0.3, its sigma inflated by the shift,
    dozens of values later). As Page–Hinkley's warm-up, only a lone first value is
    an outlier: when the warm-up's first two or more values were set aside, on one
    side, the update that ends the warm-up signals (``drift_detected``, the sums
    still 0; in the direction ``mode`` watches) and the baseline stays the new
    level. Two absurd first values (1e90) therefore give one alarm, and do not
    blind the rule. A first value alone cannot be told from an outlier: a shift
    one value in is learned as the level. Nor on a warm-up whose middle never
    moved (its reach is 0: a figure that moves in steps often moves twice running).

    The learned sigma needs a scale the warm-up can show:

    - **a constant warm-up gives none**: while the values kept are all the same,
      the detector keeps learning past ``min_instances`` (``learning`` stays
      True, the statistic 0). A value that differs joins the warm-up; it ends
      once the middle values differ, i.e. more than ``trim`` values stand apart
      on one side (a lone 1e90 among equal values is set aside: it is not a
      scale). (Before, sigma was floored at 1e-12: a figure such as
      ``drift_share`` that was 0 in every warm-up window then signalled on the
      first window with one drifted column.)
    - **a figure that moves in steps is measured in steps**: ``step`` is the
      smallest gap between the distinct values kept (a share of ``m`` columns
      moves by ``1/m``; a continuous figure's step is tiny and neither bound
      below binds). With a learned sigma:

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
        #: warm-up values seen, and how often each (dropped once learned)
        self._n = 0
        self._values: dict[float, int] = {}
        #: the warm-up's first ``trim + 1`` values in arrival order (dropped once learned)
        self._head: list[float] = []
        #: (target, sigma, slack ``k`` in sigmas) learned from the warm-up
        self._learned: tuple[float, float, float] | None = None
        self._s_hi = 0.0
        self._s_lo = 0.0
        self._drift = False

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
        if self._learned is not None:
            return self._learned
        if self.target is not None and self.sigma is not None:
            return self.target, self.sigma, self.k
        return None

    def _learn(self) -> tuple[tuple[float, float, float] | None, int]:
        """The in-control parameters the warm-up so far gives (see the class notes),
        or None while it has too few values or no scale; and the side of a change
        early in it (:func:`early_shift`: +1 up, -1 down, 0 none; always 0 with a
        given ``target``, against which such a change shows after the warm-up)."""
        if self._n < self.min_instances:
            return None, 0
        b = robust_baseline(self._values, trim_count(self.min_instances))
        shift = 0 if self.target is not None else early_shift(self._head, b.centre, b.reach)
        mu = self.target if self.target is not None else b.mean
        if self.sigma is not None:
            return (mu, self.sigma, self.k), shift
        if b.sd <= 0.0:
            return None, 0  # the values kept are all equal: no scale yet
        sd = max(b.sd, b.step / 2.0, 1e-12)
        return (mu, sd, max(self.k, b.step / (2.0 * sd))), shift

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
            self._values[x] = self._values.get(x, 0) + 1
            if len(self._head) <= trim_count(self.min_instances):
                self._head.append(x)
            self._learned, shift = self._learn()
            if self._learned is not None:
                self._values, self._head = {}, []
                self._drift = (shift > 0 and self.mode != "down") or (shift < 0 and self.mode != "up")
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
            "values": [[v, c] for v, c in sorted(self._values.items())],
            "head": list(self._head),
            **({} if self._learned is None else {"learned": list(self._learned)}),
            "s_hi": self._s_hi,
            "s_lo": self._s_lo,
            "drift": self._drift,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CUSUM:
        """Rebuild a detector from :meth:`state`; it continues exactly where that one was.

        A state saved before the warm-up's values were kept (no ``values``) is
        converted: a finished warm-up keeps the target and sigma it learned; a
        warm-up of one repeated value (variance 0) becomes that value, as often;
        any other unfinished warm-up starts again (its values are not known). A
        warm-up saved without its first values (no ``head``) cannot tell a change
        early in it (:func:`early_shift`): it ends without one, as it would have."""
        if state.get("type") != "CUSUM":
            raise ValueError(f"not a CUSUM state: {state.get('type')!r}")
        det = cls(**state["settings"])
        det._s_hi = float(state["s_hi"])
        det._s_lo = float(state["s_lo"])
        det._drift = bool(state["drift"])
        if "values" not in state:
            det._from_welford(int(state["n"]), float(state["mean"]), float(state["m2"]),
                              float(state.get("step", 0.0)))
            return det
        det._n = int(state["n"])
        det._values = {float(v): int(c) for v, c in state["values"]}
        det._head = [float(v) for v in state.get("head", [])]  # saved before: not known
        if "learned" in state:
            mu, sd, k = (float(v) for v in state["learned"])
            det._learned = (mu, sd, k)
        return det

    def _from_welford(self, n: int, mean: float, m2: float, step: float) -> None:
        """Take over a warm-up kept as a count, a mean, a sum of squared deviations
        (Welford) and the smallest step, as states were saved before; see
        :meth:`from_state`."""
        if self.target is not None and self.sigma is not None:
            return
        if n >= self.min_instances and (self.sigma is not None or m2 > 0.0):
            mu = self.target if self.target is not None else mean
            if self.sigma is not None:
                self._learned = (mu, self.sigma, self.k)
            else:
                sd = max(math.sqrt(m2 / (n - 1)), step / 2.0, 1e-12)
                self._learned = (mu, sd, max(self.k, step / (2.0 * sd)))
        elif n > 0 and m2 <= 0.0:
            self._n, self._values = n, {mean: n}

    def __repr__(self) -> str:
        return (
            f"CUSUM(k={self.k}, h={self.h}, target={self.target}, sigma={self.sigma}, "
            f"min_instances={self.min_instances}, mode={self.mode!r})"
        )
