"""What to test on one column: :class:`ColumnSpec`, validated against the drift-test registry."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors._columns import KINDS, Kind
from detectors.drift.registry import get_test


@dataclass(frozen=True)
class ColumnSpec:
    """What to test on one column.

    ``kind`` is ``"numerical"`` or ``"categorical"``. ``method`` is a registered
    drift test name (see :func:`detectors.list_tests`) or ``"auto"`` (Evidently
    0.7's default choice). ``threshold`` ``None`` means the chosen test's default
    threshold, exactly as Evidently does.
    """

    name: str
    kind: Kind
    method: str = "auto"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"column {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        if self.threshold is not None and not math.isfinite(float(self.threshold)):
            raise ValueError(
                f"column {self.name!r}: threshold must be finite, got {self.threshold!r}"
            )
        if self.method != "auto":
            test = get_test(self.method)  # raises KeyError naming the known tests
            if self.kind not in test.kinds:
                raise ValueError(
                    f"column {self.name!r}: test {self.method!r} does not accept {self.kind} "
                    f"columns (accepts {', '.join(test.kinds)})"
                )
