"""Page–Hinkley test for a change in the mean of a stream."""

from __future__ import annotations

import math
from typing import Any, Literal

from detectors.sequential._bound import bounded

Mode = Literal["up", "down", "both"]


class PageHinkley:
    """Page–Hinkley change detector (Page, 1954; Hinkley, 1971), as river's ``drift.PageHinkley``.

    Keeps the running mean of the stream and the cumulative deviation from it
    (minus a tolerance ``delta``); signals when that sum rises more than
    ``threshold`` above its running minimum (``mode="up"``, a mean increase),
    falls more than ``threshold`` below its running maximum (``"down"``), or
    either (``"both"``). ``alpha`` < 1 fades old deviations. Nothing is
    signalled before ``min_instances`` values. After a detection the next
    ``update`` starts afresh.

    >>> ph = PageHinkley(min_instances=5, delta=0.005, threshold=2.0)
    >>> series = [0.1] * 20 + [0.6] * 20
    >>> next(i for i, x in enumerate(series) if ph.update(x).drift_detected)
    24

    Non-finite values are ignored (the state does not change); values beyond ±1e100
    count as ±1e100 (:data:`detectors.sequential._bound.LIMIT`), so the sums stay finite.
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
        self._n = 0
        self._mean = 0.0
        self._sum_up = 0.0
        self._min_up = math.inf
        self._sum_down = 0.0
        self._max_down = -math.inf
        self._drift = False

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
        (``"up"``), the fall below the running maximum (``"down"``), or the larger."""
        if self._n == 0:
            return 0.0
        up = self._sum_up - self._min_up
        down = self._max_down - self._sum_down
        if self.mode == "up":
            return up
        if self.mode == "down":
            return down
        return max(up, down)

    @property
    def n(self) -> int:
        """Values seen since the last reset or detection."""
        return self._n

    def update(self, x: float) -> PageHinkley:
        """Add one value; returns ``self`` so calls chain."""
        if self._drift:
            self._reset_state()
        x = float(x)
        if not math.isfinite(x):
            return self
        x = bounded(x)  # sums stay finite: the state stays valid JSON
        self._n += 1
        self._mean += (x - self._mean) / self._n
        dev = x - self._mean
        self._sum_up = self.alpha * self._sum_up + dev - self.delta
        self._min_up = min(self._min_up, self._sum_up)
        self._sum_down = self.alpha * self._sum_down + dev + self.delta
        self._max_down = max(self._max_down, self._sum_down)
        if self._n >= self.min_instances:
            up = self._sum_up - self._min_up > self.threshold
            down = self._max_down - self._sum_down > self.threshold
            self._drift = (self.mode in ("up", "both") and up) or (
                self.mode in ("down", "both") and down
            )
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
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PageHinkley:
        """Rebuild a detector from :meth:`state`; it continues exactly where that one was."""
        if state.get("type") != "PageHinkley":
            raise ValueError(f"not a PageHinkley state: {state.get('type')!r}")
        det = cls(**state["settings"])
        det._n = int(state["n"])
        det._mean = float(state["mean"])
        det._sum_up = float(state["sum_up"])
        det._min_up = math.inf if state["min_up"] is None else float(state["min_up"])
        det._sum_down = float(state["sum_down"])
        det._max_down = -math.inf if state["max_down"] is None else float(state["max_down"])
        det._drift = bool(state["drift"])
        return det

    def __repr__(self) -> str:
        return (
            f"PageHinkley(min_instances={self.min_instances}, delta={self.delta}, "
            f"threshold={self.threshold}, alpha={self.alpha}, mode={self.mode!r})"
        )
