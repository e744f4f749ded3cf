"""Seeded column generators shared by the detectors tests."""

from __future__ import annotations

import numpy as np

NUM_STYLES = ("normal", "shifted", "discrete3", "binary", "rounded", "heavy_tail", "constant")
CAT_STYLES = ("few", "binary", "many", "single", "unseen")


def numerical(
    rng: np.random.Generator, style: str, n: int, *, current: bool = False, missing: float = 0.0
) -> np.ndarray:
    if style == "normal":
        x = rng.normal(size=n)
    elif style == "shifted":
        x = rng.normal(0.3 if current else 0.0, 1.0 + (0.2 if current else 0.0), size=n)
    elif style == "discrete3":
        x = rng.integers(0, 3 + int(current), n).astype(float)
    elif style == "binary":
        x = (rng.random(n) < (0.4 if current else 0.5)).astype(float)
    elif style == "rounded":
        x = np.round(rng.normal(size=n), 1)
    elif style == "heavy_tail":
        x = rng.standard_t(2, size=n) * 100.0
    elif style == "constant":
        x = np.full(n, 7.0)
    else:  # pragma: no cover
        raise ValueError(style)
    if missing and n:
        x[rng.random(n) < missing] = np.nan
        x[rng.random(n) < missing / 4] = np.inf
    return x


def categorical(
    rng: np.random.Generator, style: str, n: int, *, current: bool = False, missing: float = 0.0
) -> np.ndarray:
    if style == "few":
        cats, p = ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1]
        if current:
            p = [0.3, 0.3, 0.25, 0.15]
    elif style == "binary":
        cats, p = ["no", "yes"], [0.7, 0.3] if not current else [0.6, 0.4]
    elif style == "many":
        cats = [f"c{i:02d}" for i in range(30)]
        p = list(np.full(30, 1 / 30))
    elif style == "single":
        cats, p = ["only"], [1.0]
    elif style == "unseen":
        cats, p = (["a", "b", "new"], [0.45, 0.45, 0.1]) if current else (["a", "b"], [0.5, 0.5])
    else:  # pragma: no cover
        raise ValueError(style)
    x = rng.choice(np.array(cats, dtype=object), size=n, p=np.asarray(p) / np.sum(p)).astype(object)
    if missing and n:
        x[rng.random(n) < missing] = None
    return x
