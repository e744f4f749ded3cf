"""Synthetic churn-model data whose distribution can shift: for the demo, tests and benches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np

NUMERICAL = ("age", "tenure_days", "monthly_charges")
CATEGORICAL = ("plan", "region")
PLANS = ("basic", "pro", "enterprise")
REGIONS = ("eu", "us", "apac")


def sample(n: int, rng: np.random.Generator, *, shifted: bool = False) -> dict[str, np.ndarray]:
    """``n`` rows; ``shifted`` moves age, monthly_charges and the plan mix."""
    age = rng.normal(48 if shifted else 40, 10, n).round()
    tenure = rng.exponential(400, n).round()
    charges = rng.normal(91 if shifted else 70, 20, n).round(2)
    plan_p = (0.2, 0.3, 0.5) if shifted else (0.5, 0.35, 0.15)
    plan = rng.choice(np.array(PLANS, dtype=object), n, p=plan_p)
    region = rng.choice(np.array(REGIONS, dtype=object), n, p=(0.5, 0.3, 0.2))
    # most customers are confidently "stays" (score well below 0.5); the shift moves them
    # towards the decision boundary, where a calibrated model is right less often
    z = -2.0 + 0.08 * (age - 40) - 0.002 * (tenure - 400) + 0.04 * (charges - 70)
    prediction = (1 / (1 + np.exp(-z))).round(4)
    return {"age": age, "tenure_days": tenure, "monthly_charges": charges, "plan": plan, "region": region,
            "prediction": prediction}


def write_reference_csv(path: str, n: int = 3000, seed: int = 7, *, label: bool = False) -> None:
    """A reference file; ``label``: with a ``label`` column drawn from the (calibrated)
    prediction, for label drift, reference figures and estimated performance."""
    import csv  # noqa: PLC0415

    cols = sample(n, np.random.default_rng(seed))
    if label:
        cols["label"] = (np.random.default_rng(seed + 1).random(n) < cols["prediction"]).astype(int)
    names = list(cols)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for i in range(n):
            w.writerow([cols[c][i] for c in names])


def events(
    *, model: str, start: datetime, windows: int, per_window: int, window_seconds: int,
    shift_from: int, seed: int = 11, version: str = "v1",
) -> Iterator[dict[str, object]]:
    """Prediction events in event-time order: ``per_window`` events in each of
    ``windows`` consecutive windows; windows from index ``shift_from`` on drift."""
    rng = np.random.default_rng(seed)
    base_ms = int(start.timestamp() * 1000)
    step_ms = window_seconds * 1000 // per_window
    n = 0
    for w in range(windows):
        cols = sample(per_window, rng, shifted=w >= shift_from)
        for i in range(per_window):
            ts = base_ms + w * window_seconds * 1000 + i * step_ms
            yield {
                "event_id": f"{model}-{n:08d}",
                "model": model,
                "version": version,
                "ts": ts,
                "features": {
                    "age": float(cols["age"][i]),
                    "tenure_days": float(cols["tenure_days"][i]),
                    "monthly_charges": float(cols["monthly_charges"][i]),
                    "plan": str(cols["plan"][i]),
                    "region": str(cols["region"][i]),
                },
                "prediction": float(cols["prediction"][i]),
                "segment": {"region": str(cols["region"][i])},
            }
            n += 1


def label_events(
    predictions: list[dict[str, object]], *, seed: int = 5, delay_ms: int = 0,
    accuracy_drop_from: int | None = None, drop: float = 0.0, per_window: int | None = None,
) -> list[dict[str, object]]:
    """One label event per prediction event: class 1 with probability equal to the
    prediction (the score is calibrated), timestamped ``delay_ms`` after it. From
    window ``accuracy_drop_from`` on (with ``per_window`` events per window), a share
    ``drop`` of the labels is flipped: the model gets worse there."""
    rng = np.random.default_rng(seed)
    out = []
    for i, ev in enumerate(predictions):
        p = float(ev["prediction"])  # type: ignore[arg-type]
        label = int(rng.random() < p)
        if accuracy_drop_from is not None and per_window and i // per_window >= accuracy_drop_from:
            if rng.random() < drop:
                label = 1 - label
        out.append({"event_id": ev["event_id"], "model": ev["model"], "label": label,
                    "ts": int(ev["ts"]) + delay_ms})  # type: ignore[call-overload]
    return out
