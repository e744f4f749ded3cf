"""The registry of drift tests.

A drift test is a small object: metadata (what its score means, which
direction is drift, default threshold, accepted column kinds) plus one
``score(ref, cur, bins)`` hook. The threshold comparison lives once, in
:meth:`DriftTest.is_drift`. Register a test with :func:`register_test`::

    @register_test("ks", score_kind="p_value", default_threshold=0.05,
                   kinds=("numerical",), inclusive=True)
    def ks(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
        "Two-sample Kolmogorov–Smirnov test, p-value."
        ...

The config validator calls :func:`list_tests` to check ``method`` names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from detectors._columns import CurrentColumn, PreparedColumn

ScoreKind = Literal["p_value", "distance"]
ScoreFunc = Callable[["PreparedColumn", "CurrentColumn", str], float]


@dataclass(frozen=True)
class DriftTest:
    """A registered drift test.

    ``score_kind`` is ``"p_value"`` (drift when the score is *below* the
    threshold) or ``"distance"`` (drift when *above*). ``inclusive`` says
    whether equality counts as drift (Evidently differs per test: KS uses
    ``p <= t``, chi-square ``p < t``, Wasserstein ``d >= t``, energy ``d > t``).
    ``evidently_name`` is Evidently's name of the same test, or ``None`` when
    Evidently has no working equivalent.
    """

    name: str
    func: ScoreFunc
    score_kind: ScoreKind
    default_threshold: float
    kinds: tuple[str, ...]
    inclusive: bool
    description: str
    evidently_name: str | None = None
    aliases: tuple[str, ...] = ()
    #: whether the test reads the reference's values in their original order
    #: (``PreparedColumn.values``); references prepared for tests that do not keep only
    #: their sorted values (see :func:`detectors.prepare_reference`)
    reads_order: bool = True

    @property
    def direction(self) -> Literal["lower", "higher"]:
        """Which direction of the score means drift."""
        return "lower" if self.score_kind == "p_value" else "higher"

    def is_drift(self, score: float, threshold: float) -> bool:
        """The one place a score is compared with its threshold. NaN never drifts."""
        if score is None or math.isnan(score):
            return False
        if self.score_kind == "p_value":
            return bool(score <= threshold) if self.inclusive else bool(score < threshold)
        return bool(score >= threshold) if self.inclusive else bool(score > threshold)

    def score(self, ref: PreparedColumn, cur: CurrentColumn, bins: str = "evidently") -> float:
        return float(self.func(ref, cur, bins))


_REGISTRY: dict[str, DriftTest] = {}
_ALIASES: dict[str, str] = {}


def register_test(
    name: str,
    *,
    score_kind: ScoreKind,
    default_threshold: float,
    kinds: tuple[str, ...],
    inclusive: bool,
    evidently_name: str | None = None,
    aliases: tuple[str, ...] = (),
    reads_order: bool = True,
) -> Callable[[ScoreFunc], ScoreFunc]:
    """Decorator registering a score function as drift test ``name``.

    The function's docstring is the test's documentation (required). ``reads_order``:
    whether it reads ``ref.values`` (the reference in its original order); say False
    only for a test that reads sorted values, counts or moments alone.
    """
    if score_kind not in ("p_value", "distance"):
        raise ValueError(f"score_kind must be 'p_value' or 'distance', got {score_kind!r}")

    def deco(func: ScoreFunc) -> ScoreFunc:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"drift test {name!r} registered twice")
        doc = (func.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"drift test {name!r} needs a docstring")
        _REGISTRY[name] = DriftTest(
            name=name,
            func=func,
            score_kind=score_kind,
            default_threshold=float(default_threshold),
            kinds=tuple(kinds),
            inclusive=inclusive,
            description=doc,
            evidently_name=evidently_name,
            aliases=tuple(aliases),
            reads_order=reads_order,
        )
        for a in aliases:
            _ALIASES[a] = name
        return func

    return deco


def get_test(name: str) -> DriftTest:
    """The registered test called ``name`` (or one of its aliases).

    Raises ``KeyError`` naming the known tests when there is none.
    """
    key = _ALIASES.get(name, name)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown drift test {name!r}; known: {', '.join(list_tests())}") from None


def list_tests() -> tuple[str, ...]:
    """Names of all registered drift tests, sorted (``"auto"`` is not a test)."""
    return tuple(sorted(_REGISTRY))


def all_tests() -> tuple[DriftTest, ...]:
    """Every registered test, sorted by name."""
    return tuple(_REGISTRY[n] for n in sorted(_REGISTRY))
