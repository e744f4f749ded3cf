"""Page–Hinkley test for a change in the mean of a stream."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from detectors.sequential._bound import bounded
from detectors.sequential.cusum import SPREADS, trim_count

Mode = Literal["up", "down", "both"]

log = logging.getLogger("driftwarden.detectors")


def outlier_reach(warmup: list[float], threshold: float) -> tuple[float, float]:
    """(centre, reach) of a warm-up's values (at least one, finite): the centre is their
    median; a value farther from the centre than ``reach`` is an outlier. ``reach`` is
    the larger of ``threshold`` (a value that far off would cross it on its own) and
    :data:`~detectors.sequential.cusum.SPREADS` times the range of the middle values
    (all but the :func:`~detectors.sequential.cusum.trim_count` lowest and highest;
    every value for warm-ups of fewer than four), in the values' units."""
    vals = sorted(warmup)
    n = len(vals)
    trim = max(0, trim_count(n))
    centre = (vals[(n - 1) // 2] + vals[n // 2]) / 2.0
    return centre, max(threshold, SPREADS * (vals[n - 1 - trim] - vals[trim]))


class PageHinkley:
    """Page–Hinkley change detector (Page, 1954; Hinkley, 1971), as river's
    ``drift.PageHinkley``, made robust to lone outlier values.

    Keeps the running mean of the stream and the cumulative deviation from it
    (minus a tolerance ``delta``); signals when that sum rises more than
    ``threshold`` above its running minimum (``mode="up"``, a mean increase),
    falls more than ``threshold`` below its running maximum (``"down"``), or
    either (``"both"``). ``alpha`` < 1 fades old deviations. The first
    ``min_instances`` values are the warm-up: nothing is signalled before its
    end. After a detection the next ``update`` starts afresh (warm-up included).

    >>> ph = PageHinkley(min_instances=5, delta=0.005, threshold=2.0)
    >>> series = [0.1] * 20 + [0.6] * 20
    >>> next(i for i, x in enumerate(series) if ph.update(x).drift_detected)
    24

    Non-finite values are ignored (the state does not change); values beyond ±1e100
    count as ±1e100 (:data:`detectors.sequential._bound.LIMIT`), so the sums stay finite.

    **Outliers.** One absurd value (a figure 1e6 times the usual) used to move the
    running mean and the sums so far that a real change after it went unseen: in the
    warm-up it dragged the mean up for good (a later rise read as a fall); after it,
    it signalled (at once, or a few values later in the other direction: the mean it
    dragged along fell back) and the restart re-learned from scratch, absorbing a
    change that followed within the next ``min_instances`` values. river's ``PageHinkley`` has
    the same weakness. Now, as CUSUM's warm-up (:func:`~detectors.sequential.cusum.robust_baseline`):

    - the warm-up's values are kept (in order) and at its end a lone value farther from
      their median than the reach (:func:`outlier_reach`: at least ``threshold``, and
      at least twice the range of the middle values) is set aside (two or more in a row
      on one side are a change: counted); the rest make the mean and the sums, as they
      would have value by value;
    - after the warm-up, a value farther than that reach from the running mean is held
      back (it signals if the plain test would, on that value, as before); the next
      value decides what it was. Also beyond reach on the same side: a change, and
      the detector goes on as the plain test would have (restarting with the next
      value after a signal; else counting both, in order). Back within reach: a lone
      outlier, set aside; it moves neither the mean nor the sums, so the detector
      is not blinded and does not restart (its signal, if it gave one, stands: one
      alarm, as a plain threshold rule would give).

    On data without such values nothing is set aside and every figure is as before.
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Mode = "both",
    ) -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError(f"mode must be 'up', 'down' or 'both', got {mode!r}")
        if min_instances < 1 or threshold <= 0 or not (0 < alpha <= 1):
            raise ValueError("need min_instances >= 1, threshold > 0 and 0 < alpha <= 1")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode: Mode = mode
        self._reset_state()

    def _reset_state(self) -> None:
        #: values in the running mean and the sums
        self._n = 0
        self._mean = 0.0
        self._sum_up = 0.0
        self._min_up = math.inf
        self._sum_down = 0.0
        self._max_down = -math.inf
        self._drift = False
        #: the warm-up's values in arrival order (emptied at its end)
        self._warm: list[float] = []
        #: outlier reach learned at the end of the warm-up (None during it)
        self._reach: float | None = None
        #: a value beyond reach waiting for the next one to tell outlier from change
        self._pending: float | None = None
        #: values set aside as outliers since the last reset or detection
        self._set_aside = 0

    def reset(self) -> None:
        """Forget the stream."""
        self._reset_state()

    @property
    def drift_detected(self) -> bool:
        """Whether the last ``update`` signalled a change."""
        return self._drift

    @property
    def statistic(self) -> float:
        """What is compared with ``threshold``: the rise above the running minimum
        (``"up"``), the fall below the running maximum (``"down"``), or the larger; with
        a held value (see the class notes) as if it were counted."""
        if self._n == 0:
            return 0.0
        sums = (self._n, self._mean, self._sum_up, self._min_up, self._sum_down, self._max_down)
        up, down = self._rises(sums if self._pending is None else self._stepped(self._pending))
        if self.mode == "up":
            return up
        if self.mode == "down":
            return down
        return max(up, down)

    @property
    def n(self) -> int:
        """Values taken in since the last reset or detection (warm-up values included;
        outliers set aside and a value held back not)."""
        return self._n + len(self._warm)

    @property
    def set_aside(self) -> int:
        """Outlier values set aside since the last reset or detection."""
        return self._set_aside

    @property
    def learning(self) -> bool:
        """True during the warm-up (nothing is signalled yet)."""
        return self._reach is None

    def _stepped(self, x: float) -> tuple[int, float, float, float, float, float]:
        """(n, mean, sum_up, min_up, sum_down, max_down) after the plain Page–Hinkley
        update with ``x``; the detector is not changed."""
        n = self._n + 1
        mean = self._mean + (x - self._mean) / n
        dev = x - mean
        sum_up = self.alpha * self._sum_up + dev - self.delta
        sum_down = self.alpha * self._sum_down + dev + self.delta
        return n, mean, sum_up, min(self._min_up, sum_up), sum_down, max(self._max_down, sum_down)

    def _step(self, x: float) -> None:
        """The plain Page–Hinkley update of the mean and the sums with ``x``."""
        (self._n, self._mean, self._sum_up, self._min_up, self._sum_down,
         self._max_down) = self._stepped(x)

    def _rises(self, sums: tuple[int, float, float, float, float, float]) -> tuple[float, float]:
        """(rise above the running minimum, fall below the running maximum) of ``sums``."""
        _n, _mean, sum_up, min_up, sum_down, max_down = sums
        return sum_up - min_up, max_down - sum_down

    def _crosses(self, up: float, down: float) -> bool:
        """Whether a rise ``up`` or a fall ``down`` crosses ``threshold`` in the watched direction."""
        return (self.mode in ("up", "both") and up > self.threshold) or (
            self.mode in ("down", "both") and down > self.threshold
        )

    def _signal(self) -> bool:
        """Whether the sums now cross ``threshold`` in the watched direction."""
        return self._crosses(self._sum_up - self._min_up, self._max_down - self._sum_down)

    def _end_warmup(self) -> None:
        """Learn the reach from the warm-up, set its lone outliers aside and count the rest.

        As after the warm-up, only a *lone* value beyond the reach is an outlier: two or
        more in a row on one side of the centre are a change (a shift a few values into
        the warm-up makes the values before it lie beyond the reach of the new level's
        median; set aside, the shift became the baseline and was never signalled)."""
        centre, reach = outlier_reach(self._warm, self.threshold)
        side = [0 if abs(v - centre) <= reach else (1 if v > centre else -1) for v in self._warm]
        for i, v in enumerate(self._warm):
            s = side[i]
            lone = s != 0 and (i == 0 or side[i - 1] != s) and (i + 1 == len(side) or side[i + 1] != s)
            if lone:
                self._set_aside += 1
            else:
                self._step(v)
        self._warm = []
        self._reach = reach

    def _beyond(self, x: float) -> bool:
        """Whether ``x`` is farther than the reach from the running mean (after the warm-up)."""
        return self._reach is not None and self._n > 0 and abs(x - self._mean) > self._reach

    def update(self, x: float) -> PageHinkley:
        """Add one value; returns ``self`` so calls chain."""
        if self._drift and self._pending is None:
            self._reset_state()
        self._drift = False
        x = float(x)
        if not math.isfinite(x):
            return self
        x = bounded(x)  # sums stay finite: the state stays valid JSON
        if self._reach is None:
            self._warm.append(x)
            if len(self._warm) >= self.min_instances:
                self._end_warmup()
                self._drift = self._signal()
            return self
        held, self._pending = self._pending, None
        if held is not None:
            if self._beyond(x) and (held > self._mean) == (x > self._mean):
                return self._confirm(held, x)
            self._set_aside += 1  # a lone outlier: it moves nothing (a signal it gave stands)
        if self._beyond(x):
            self._pending = x
            self._drift = self._crosses(*self._rises(self._stepped(x)))
            return self
        self._step(x)
        self._drift = self._signal()
        return self

    def _confirm(self, held: float, x: float) -> PageHinkley:
        """``held`` and then ``x``, both beyond the reach on one side: a change. If
        ``held`` signalled (the plain test would have), the detector restarts, as after
        any detection, with ``x`` its first value; else both are counted, in order."""
        if self._crosses(*self._rises(self._stepped(held))):
            self._reset_state()
            return self.update(x)
        self._step(held)
        first = self._signal()
        self._step(x)
        self._drift = first or self._signal()
        return self

    def state(self) -> dict[str, Any]:
        """Settings and state as a JSON-serialisable dict (infinities as None)."""
        return {
            "type": "PageHinkley",
            "settings": {
                "min_instances": self.min_instances,
                "delta": self.delta,
                "threshold": self.threshold,
                "alpha": self.alpha,
                "mode": self.mode,
            },
            "n": self._n,
            "mean": self._mean,
            "sum_up": self._sum_up,
            "min_up": None if math.isinf(self._min_up) else self._min_up,
            "sum_down": self._sum_down,
            "max_down": None if math.isinf(self._max_down) else self._max_down,
            "drift": self._drift,
            "warmup": list(self._warm),
            "reach": self._reach,
            "pending": self._pending,
            "set_aside": self._set_aside,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PageHinkley:
        """Rebuild a detector from :meth:`state`; it continues exactly where that one was.

        A state saved before outliers were set aside (no ``reach``) is converted: past
        its warm-up it goes on with what it has, its reach ``threshold`` (the warm-up's
        spread is not known); within its warm-up (nothing signalled yet, its values not
        known) it starts again, with a WARNING."""
        if state.get("type") != "PageHinkley":
            raise ValueError(f"not a PageHinkley state: {state.get('type')!r}")
        det = cls(**state["settings"])
        n = int(state["n"])
        if "reach" not in state and n < det.min_instances:
            if n > 0:
                log.warning("a Page-Hinkley detector saved by an earlier version within its "
                            "warm-up (%d of %d values) starts its warm-up again", n, det.min_instances)
            return det
        det._n = n
        det._mean = float(state["mean"])
        det._sum_up = float(state["sum_up"])
        det._min_up = math.inf if state["min_up"] is None else float(state["min_up"])
        det._sum_down = float(state["sum_down"])
        det._max_down = -math.inf if state["max_down"] is None else float(state["max_down"])
        det._drift = bool(state["drift"])
        if "reach" not in state:
            det._reach = det.threshold
            return det
        det._warm = [float(v) for v in state["warmup"]]
        det._reach = None if state["reach"] is None else float(state["reach"])
        det._pending = None if state["pending"] is None else float(state["pending"])
        det._set_aside = int(state["set_aside"])
        return det

    def __repr__(self) -> str:
        return (
            f"PageHinkley(min_instances={self.min_instances}, delta={self.delta}, "
            f"threshold={self.threshold}, alpha={self.alpha}, mode={self.mode!r})"
        )
