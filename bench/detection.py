"""Detection quality: false alarms on stationary windows and delay after a known change.

Modes (each runs the product's own code: ``PreparedModel.build`` from a model
config, ``WindowReferences`` for the reference mode, ``compute_figures`` per
window, ``alerts.rules.detector_step`` for the rule detector):

- ``evidently``: Evidently's fixed thresholds, dataset drift at share 0.5;
- ``calibrated``: ``thresholds = "calibrated"`` at the defaults (alpha 0.01,
  alpha_column 0.01);
- ``rolling``: calibrated thresholds, ``reference_mode = "rolling"``
  (``reference_windows = 4``);
- ``calibrated_cusum``: calibrated verdicts, plus a CUSUM rule on
  ``drift_share`` (k 0.5, h 5, 20 warm-up windows); an alarm is either;
- ``cusum``: that CUSUM rule alone (the calibrated verdict ignored), so its own
  false alarms and delay show (in ``calibrated_cusum`` the verdict's hide them);
- ``page_hinkley``: a Page–Hinkley rule alone on ``drift_share`` (threshold
  0.5, delta 0.005, 20 warm-up windows; the calibrated verdict ignored).

An alarm is a window whose dataset verdict (or detector) says drift.
``false_alarms_per_1000`` counts alarms over stationary windows; the delay is
the number of windows after the change point before the first alarm (0: the
first changed window), censored at ``MAX_DELAY`` windows.

Data:

- synthetic: 20 columns (12 normal with a common factor, 4 log-normal, 4
  categorical), reference 10,000 rows, windows of 1,000; changes in a quarter
  of the columns: mean shifts of 0.5, 0.25 and 0.1 standard deviations, a
  1.5x scale change, a category-mix change, and a correlation change (the
  marginals stay put: per-column tests are not meant to see it);
- real, tuned on: river's ``ImageSegments`` (2,310 rows, 18 numerical),
  rows shuffled, reference 1,000 rows, windows of 200; change: a shift of the
  class mix (the first three classes only);
- real, held out (never looked at while choosing defaults): river's
  ``Shuttle`` (49,097 rows, 9 numerical, heavy ties), reference 10,000 rows,
  windows of 1,000; change: its most common class (``'0'`` in river 0.26, 93 %
  of the rows) drops to 50 %.

Each change is checked before it runs: a change whose rows have (nearly) the
class mix of the stationary pool stops the bench (:func:`check_mix_moved`).

Usage::

    python bench/detection.py [--quick]

Needs river (the ``bench`` extra). The last line::

    RESULT false_alarms_per_1000_evidently=… median_delay_windows_evidently=… … (per mode)

with the headline delay from the synthetic 0.5-sd mean shift in a quarter of
the columns at 1,000-row windows (the issue's target) and false alarms over
all synthetic stationary windows; the real datasets get keys of their own.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.rules import DetectorSpec, Rule, detector_step  # noqa: E402
from monitor.config import ModelConfig, parse_config  # noqa: E402
from monitor.ingest.batch import ColumnBatch  # noqa: E402
from monitor.ingest.schema import ModelSchema  # noqa: E402
from monitor.references.load import ReferenceSpec, load_reference  # noqa: E402
from monitor.references.rolling import WindowReferences  # noqa: E402
from monitor.windows.figures import PreparedModel, compute_figures, window_key  # noqa: E402
from monitor.windows.model_windows import OpenWindow  # noqa: E402
from storage.records import DATASET  # noqa: E402

MODES = ("evidently", "calibrated", "rolling", "calibrated_cusum", "cusum", "page_hinkley")
MAX_DELAY = 20
WARMUP = 20
NOW = datetime(2026, 1, 1, tzinfo=UTC)
Cols = dict[str, np.ndarray]

# --------------------------------------------------------------------------- data


NUM = [f"n{i}" for i in range(12)]
LOG = [f"l{i}" for i in range(4)]
CAT = [f"c{i}" for i in range(4)]
LEVELS = np.array(["a", "b", "c", "d", "e"], dtype=object)
P_CAT = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def synthetic(rng: np.random.Generator, n: int, change: str = "none", size: float = 0.0) -> Cols:
    """One block of synthetic rows; ``change`` hits a quarter of the columns (5 of 20)."""
    factor = rng.standard_normal(n)
    load = np.full(12, 0.55)
    if change == "correlation":
        load[:5] = -0.55  # same marginals, the first five now move against the rest
    out: Cols = {}
    for i, c in enumerate(NUM):
        x = load[i] * factor + np.sqrt(1 - load[i] ** 2) * rng.standard_normal(n)
        if i < 5 and change == "mean":
            x = x + size
        if i < 5 and change == "scale":
            x = x * size
        out[c] = x
    for c in LOG:
        out[c] = np.exp(0.5 * rng.standard_normal(n))
    for c in CAT:
        p = P_CAT
        if change == "category":
            p = 0.6 * P_CAT + 0.4 * P_CAT[::-1]
        out[c] = rng.choice(LEVELS, n, p=p)
    if change == "category":  # the fifth hit column: a numeric one
        out["n5"] = out["n5"] + 0.5
    return out


def missing_river() -> str | None:
    """What to install when river (the real data sets) does not import, else ``None``;
    asked before the synthetic suite, so a run without it stops at once rather than with a
    traceback minutes in."""
    try:
        import river.datasets  # noqa: F401, PLC0415
    except ImportError as exc:
        return (f"bench/detection.py needs river for its real data sets ({exc}):"
                " pip install -e '.[bench]'")
    return None


def river_rows(name: str) -> tuple[Cols, np.ndarray]:
    import river.datasets as rd  # noqa: PLC0415

    ds = getattr(rd, name)()
    xs, ys = [], []
    for x, y in ds:
        xs.append(x)
        ys.append(y)
    keys = list(xs[0])
    cols = {f"f{j}": np.array([float(r[k]) for r in xs]) for j, k in enumerate(keys)}
    return cols, np.array([str(y) for y in ys], dtype=object)


def take(cols: Cols, idx: np.ndarray) -> Cols:
    return {k: v[idx] for k, v in cols.items()}


# --------------------------------------------------------------------------- the product's path


def write_csv(path: Path, cols: Cols) -> None:
    names = list(cols)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(cols[c].tolist() for c in names), strict=True):
            w.writerow(row)


@dataclass
class Mode:
    name: str
    pm: PreparedModel
    refs: WindowReferences
    #: a change-detector rule on ``drift_share`` (CUSUM or Page–Hinkley), if any
    detector: Rule | None = None
    #: whether the dataset verdict raises an alarm (False: only the detector rule does)
    verdict: bool = True


def model_config(folder: Path, cols: Cols, mode: str, window: int) -> ModelConfig:
    numerical = [c for c, v in cols.items() if v.dtype.kind == "f"]
    categorical = [c for c, v in cols.items() if v.dtype.kind != "f"]
    model: dict[str, Any] = {
        "name": "m", "reference": "ref.csv", "layout": "flat",
        "features": {"numerical": numerical, "categorical": categorical},
        "window": {"by": "count", "size": window, "min_rows": 10},
        "drift": {"prediction": False},
    }
    if mode != "evidently":
        model["drift"]["thresholds"] = "calibrated"
    if mode == "rolling":
        model["reference_mode"] = "rolling"
        model["reference_windows"] = 4
    return parse_config({"models": [model]}, base_dir=folder).models[0]


def build_modes(ref: Cols, window: int) -> dict[str, Mode]:
    """Prepare every mode on one reference (calibration runs here, once per mode)."""
    folder = Path(tempfile.mkdtemp(prefix="dw-detection-"))
    write_csv(folder / "ref.csv", ref)
    out: dict[str, Mode] = {}
    cache: dict[str, PreparedModel] = {}
    for mode in MODES:
        cfg = model_config(folder, ref, mode, window)
        schema = ModelSchema.from_config(cfg)
        kind = "evidently" if mode == "evidently" else "calibrated"
        if kind not in cache:
            data = load_reference(cfg.reference, ReferenceSpec.from_config(cfg))
            cache[kind] = PreparedModel.build(cfg, schema, data)
        pm = replace(cache[kind], config=cfg)  # same reference and calibration, this mode's config
        detector = None
        if mode in ("calibrated_cusum", "cusum"):
            spec = DetectorSpec("cusum", (("k", 0.5), ("h", 5.0), ("min_instances", WARMUP)))
            detector = Rule("slow", "drift_share", ">", detector=spec)
        if mode == "page_hinkley":
            spec = DetectorSpec("page_hinkley", (("delta", 0.005), ("threshold", 0.5), ("min_instances", WARMUP)))
            detector = Rule("slow", "drift_share", ">", detector=spec)
        alone = mode in ("cusum", "page_hinkley")
        out[mode] = Mode(mode, pm, WindowReferences(pm), detector, verdict=not alone)
    shutil.rmtree(folder, ignore_errors=True)  # the reference is read and prepared: nothing reads the file again
    return out


def batch(cols: Cols, first: int) -> ColumnBatch:
    n = len(next(iter(cols.values())))
    offs = np.arange(first, first + n, dtype=np.int64)
    return ColumnBatch(
        model="m", ts_ms=offs.copy(), partition=np.zeros(n, dtype=np.int32), offset=offs,
        event_id=np.array([""] * n, dtype=object), version=np.array(["v"] * n, dtype=object),
        segments={}, columns=cols,
    )


def alarms(mode: Mode, windows: list[Cols]) -> Iterator[bool]:
    """The alarm of each window of one stream (the mode's reference state starts afresh)."""
    refs = WindowReferences(mode.pm)
    state: dict[str, Any] | None = None
    pos = 0
    for cols in windows:
        n = len(next(iter(cols.values())))
        w = OpenWindow("v", "", pos, pos + n, chunks=[batch(cols, pos)], rows=n)
        pos += n
        key = window_key("m", "count", w)
        figs = compute_figures(refs.for_window(key), w, by="count", now=NOW)
        if refs.active:
            refs.observe(key, cols, figs)
        share = next(m for m in figs.metrics if m.column == DATASET and m.metric == "drift_share")
        alarm = bool(share.drifted) and mode.verdict
        if mode.detector is not None:
            state, _stat, signalled = detector_step(mode.detector, state, float(share.value or 0.0))
            alarm = alarm or signalled
        yield alarm


# --------------------------------------------------------------------------- measures


def stateful(mode: Mode) -> bool:
    return mode.refs.active or mode.detector is not None


def false_alarms(mode: Mode, windows: list[Cols]) -> tuple[int, int]:
    """Alarms and windows counted (after the warm-up the rolling/CUSUM modes need)."""
    a = list(alarms(mode, windows if stateful(mode) else windows[WARMUP:]))
    a = a[WARMUP:] if stateful(mode) else a
    return sum(a), len(a)


def delay(mode: Mode, before: list[Cols], after: list[Cols]) -> int:
    """Windows after the change before the first alarm; stateless modes skip the
    windows before the change (they cannot matter), every mode stops at its first alarm."""
    lead = before if stateful(mode) else []
    for i, alarm in enumerate(alarms(mode, lead + after)):
        if alarm and i >= len(lead):
            return i - len(lead)
    return MAX_DELAY


@dataclass
class Tally:
    alarms: int = 0
    windows: int = 0
    delays: list[int] | None = None

    def per_1000(self) -> float:
        return 1000.0 * self.alarms / self.windows if self.windows else float("nan")

    def median_delay(self) -> float:
        return float(statistics.median(self.delays)) if self.delays else float("nan")


def run_dataset(
    label: str,
    modes: dict[str, Mode],
    stationary: Callable[[int], list[Cols]],
    changes: dict[str, Callable[[int], tuple[list[Cols], list[Cols]]]],
    reps: int,
    n_stationary: int,
    fa: dict[str, Tally],
    delays: dict[tuple[str, str], list[int]],
) -> None:
    for name, mode in modes.items():
        a, n = false_alarms(mode, stationary(n_stationary))
        fa[name].alarms += a
        fa[name].windows += n
    for change, make in changes.items():
        for rep in range(reps):
            before, after = make(rep)
            for name, mode in modes.items():
                delays.setdefault((change, name), []).append(delay(mode, before, after))
    print(f"  {label}: done", file=sys.stderr)


def synthetic_suite(quick: bool, fa: dict[str, Tally], delays: dict[tuple[str, str], list[int]]) -> None:
    refs = 1 if quick else 3
    for r in range(refs):
        rng = np.random.default_rng(100 + r)
        modes = build_modes(synthetic(rng, 10_000), 1000)

        def stationary(k: int, rng: np.random.Generator = rng) -> list[Cols]:
            return [synthetic(rng, 1000) for _ in range(k)]

        def change(kind: str, size: float, r: int = r) -> Callable[[int], tuple[list[Cols], list[Cols]]]:
            def make(rep: int) -> tuple[list[Cols], list[Cols]]:
                g = np.random.default_rng(10_000 * r + rep)
                before = [synthetic(g, 1000) for _ in range(WARMUP + 2)]
                after = [synthetic(g, 1000, kind, size) for _ in range(MAX_DELAY)]
                return before, after
            return make

        changes = {
            "mean_0.5sd": change("mean", 0.5),
            "mean_0.25sd": change("mean", 0.25),
            "mean_0.1sd": change("mean", 0.1),
            "scale_1.5x": change("scale", 1.5),
            "category_mix": change("category", 0.0),
            "correlation": change("correlation", 0.0),
        }
        if quick:
            changes = {k: v for k, v in changes.items() if k in ("mean_0.5sd", "mean_0.1sd")}
        run_dataset(f"synthetic reference {r}", modes, stationary, changes,
                    reps=2 if quick else 5, n_stationary=(60 if quick else 400) + WARMUP,
                    fa=fa, delays=delays)


def real_suite(name: str, ref_rows: int, window: int, change_labels: Callable[[np.ndarray], np.ndarray],
               quick: bool) -> tuple[dict[str, Tally], dict[str, list[int]]]:
    cols, y = river_rows(name)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(y))
    ref_idx, pool = order[:ref_rows], order[ref_rows:]
    if quick and ref_rows > 5000:  # quick: a smaller reference keeps calibration short
        ref_idx = ref_idx[:5000]
    modes = build_modes(take(cols, ref_idx), window)
    shifted_pool = pool[change_labels(y[pool])]

    def draw(g: np.random.Generator, from_idx: np.ndarray) -> Cols:
        return take(cols, g.choice(from_idx, window, replace=False))

    print(f"  {name}: class mix {check_mix_moved(y[pool], y[shifted_pool])}", file=sys.stderr)

    fa = {m: Tally() for m in MODES}
    delays: dict[tuple[str, str], list[int]] = {}
    g0 = np.random.default_rng(1)

    def stationary(k: int) -> list[Cols]:
        return [draw(g0, pool) for _ in range(k)]

    def make(rep: int) -> tuple[list[Cols], list[Cols]]:
        g = np.random.default_rng(50 + rep)
        return [draw(g, pool) for _ in range(WARMUP + 2)], [draw(g, shifted_pool) for _ in range(MAX_DELAY)]

    run_dataset(name, modes, stationary, {"class_mix": make}, reps=2 if quick else 8,
                n_stationary=(40 if quick else 400) + WARMUP, fa=fa, delays=delays)
    return fa, {m: delays[("class_mix", m)] for m in MODES}


def segments_change(y: np.ndarray) -> np.ndarray:
    classes = sorted(set(y.tolist()))
    return np.isin(y, classes[:3])


def shuttle_change(y: np.ndarray) -> np.ndarray:
    """Rows keeping all of the minority classes and as many of the most common class:
    that class drops to half the rows (in river 0.26's Shuttle, ``'0'`` from 93 %).
    The class is read from ``y``, not assumed; seeded."""
    labels, counts = np.unique(y, return_counts=True)
    top = labels[np.argmax(counts)]
    major = np.flatnonzero(y == top)
    keep = y != top
    keep[np.random.default_rng(3).choice(major, min(int(keep.sum()), major.shape[0]), replace=False)] = True
    return keep


#: least total-variation distance between the class mixes before and after a change
MIN_MIX_SHIFT = 0.1


def class_shares(y: np.ndarray) -> dict[str, float]:
    """Each label's share of ``y`` (0..1), by label."""
    labels, counts = np.unique(y, return_counts=True)
    return {str(k): float(c) / y.shape[0] for k, c in zip(labels, counts, strict=True)}


def check_mix_moved(before: np.ndarray, after: np.ndarray) -> str:
    """The two class mixes as text; raises ``SystemExit`` when their total-variation
    distance (half the summed absolute share differences, 0..1) is below
    :data:`MIN_MIX_SHIFT`: a "change" that keeps the mix measures nothing."""
    a, b = class_shares(before), class_shares(after)
    tv = 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys())
    text = (f"{', '.join(f'{k} {v:.3f}' for k, v in sorted(a.items()))} -> "
            f"{', '.join(f'{k} {v:.3f}' for k, v in sorted(b.items()))} (total variation {tv:.3f})")
    if not tv >= MIN_MIX_SHIFT:
        raise SystemExit(f"detection: the class-mix change does not move the mix: {text}")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer windows and repetitions (< 1 minute)")
    args = ap.parse_args()
    if (missing := missing_river()) is not None:
        print(missing, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    fa = {m: Tally() for m in MODES}
    delays: dict[tuple[str, str], list[int]] = {}
    synthetic_suite(args.quick, fa, delays)
    print("\nsynthetic: 20 columns, reference 10,000 rows, windows of 1,000")
    print(f"{'':28s}" + "".join(f"{m:>18s}" for m in MODES))
    print(f"{'false alarms / 1000':28s}" + "".join(f"{fa[m].per_1000():18.1f}" for m in MODES)
          + f"   ({fa[MODES[0]].windows} stationary windows per mode)")
    changes = sorted({c for c, _ in delays}, key=lambda c: list(dict.fromkeys(c for c, _ in delays)).index(c))
    for c in changes:
        print(f"{'median delay ' + c:28s}" + "".join(
            f"{statistics.median(delays[(c, m)]):18.1f}" for m in MODES))
    real: dict[str, tuple[dict[str, Tally], dict[str, list[int]]]] = {}
    real["segments"] = real_suite("ImageSegments", 1000, 200, segments_change, args.quick)
    real["shuttle"] = real_suite("Shuttle", 10_000, 1000, shuttle_change, args.quick)
    for label, (rfa, rdel) in real.items():
        held = " (held out)" if label == "shuttle" else ""
        print(f"\n{label}{held}")
        print(f"{'false alarms / 1000':28s}" + "".join(f"{rfa[m].per_1000():18.1f}" for m in MODES)
              + f"   ({rfa[MODES[0]].windows} windows)")
        print(f"{'median delay class_mix':28s}" + "".join(f"{statistics.median(rdel[m]):18.1f}" for m in MODES))
    print(f"\n(delays censored at {MAX_DELAY}; {time.perf_counter() - t0:.0f} s)")
    keys = []
    for m in MODES:
        keys.append(f"false_alarms_per_1000_{m}={fa[m].per_1000():.1f}")
        keys.append(f"median_delay_windows_{m}={statistics.median(delays[('mean_0.5sd', m)]):.1f}")
    for label, (rfa, rdel) in real.items():
        for m in ("evidently", "calibrated"):
            keys.append(f"false_alarms_per_1000_{m}_{label}={rfa[m].per_1000():.1f}")
            keys.append(f"median_delay_windows_{m}_{label}={statistics.median(rdel[m]):.1f}")
    print("RESULT " + " ".join(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
