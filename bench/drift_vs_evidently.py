"""Per-window drift time: driftwarden's detectors vs Evidently and NannyML, in one run.

25 columns (20 numerical, 5 categorical), reference and window of the same
size: 1k, 20k and 100k rows. For each size, in this process:

- ours: ``dataset_drift`` on a reference prepared once (``prepare_reference``
  is timed separately and not counted per window);
- Evidently: ``Report([DataDriftPreset()]).run(current, reference)`` with an
  explicit ``DataDefinition`` (``Dataset.from_pandas`` counted, building the
  DataFrames not);
- NannyML: ``UnivariateDriftCalculator`` fitted once on the reference,
  ``calculate()`` on one chunk the size of the window; the fastest of the
  method pairs tried is the one compared (kolmogorov_smirnov/chi2 is the
  fastest here; the full run also tries jensen_shannon and wasserstein).

Every per-column score is compared with Evidently's; ``max_abs_diff`` is the
largest difference over all sizes and columns, and verdicts must agree.

Usage::

    python bench/drift_vs_evidently.py [--quick] [--workers N]

``--quick`` keeps the sizes but runs each measurement once (and one NannyML
method pair): under a minute. NannyML is optional (the ``bench`` extra): when
it does not import, the ``vs_nannyml_*`` keys are ``nan``. The last line is::

    RESULT speedup_1k=… speedup_20k=… speedup_100k=… vs_nannyml_20k=… vs_nannyml_100k=… max_abs_diff=…

(speedups: Evidently time / ours; ``vs_nannyml``: NannyML time / ours).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from detectors import ColumnSpec, dataset_drift, prepare_reference  # noqa: E402

N_NUM, N_CAT = 20, 5
SIZES = {"1k": 1_000, "20k": 20_000, "100k": 100_000}


def make_columns(n: int, seed: int, drifted: bool) -> dict[str, np.ndarray]:
    """20 numerical columns of assorted shapes (some with NaN, some rounded) and 5 categorical."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for i in range(N_NUM):
        shift = 0.15 * (i % 4) if drifted else 0.0
        kind = i % 5
        if kind == 0:
            x = rng.normal(shift, 1.0, n)
        elif kind == 1:
            x = rng.lognormal(shift, 0.6, n)
        elif kind == 2:
            x = rng.uniform(0.0 + shift, 1.0 + shift, n) * 100.0
        elif kind == 3:
            x = np.round(rng.normal(50 + 10 * shift, 12, n))  # integer-valued, many ties
        else:
            x = rng.gamma(2.0 + shift, 2.0, n)
        if i % 3 == 0:
            x[rng.random(n) < 0.01] = np.nan
        cols[f"num_{i:02d}"] = x
    for j in range(N_CAT):
        k = 3 + 4 * j
        p = np.linspace(1.0, 2.0, k)
        if drifted and j % 2 == 0:
            p = p[::-1]
        cats = np.array([f"v{t}" for t in range(k)], dtype=object)
        x = rng.choice(cats, size=n, p=p / p.sum()).astype(object)
        x[rng.random(n) < 0.005] = None
        cols[f"cat_{j}"] = x
    return cols


def specs() -> list[ColumnSpec]:
    return [ColumnSpec(f"num_{i:02d}", "numerical") for i in range(N_NUM)] + [
        ColumnSpec(f"cat_{j}", "categorical") for j in range(N_CAT)
    ]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time over ``repeats`` runs, and the last result."""
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def evidently_runner(
    ref: dict[str, np.ndarray], cur: dict[str, np.ndarray]
) -> Callable[[], dict[str, float]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [s.name for s in specs() if s.kind == "numerical"]
    cat = [s.name for s in specs() if s.kind == "categorical"]
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    rdf, cdf = pd.DataFrame(ref), pd.DataFrame(cur)

    def run() -> dict[str, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snap = Report([DataDriftPreset()]).run(
                Dataset.from_pandas(cdf, data_definition=dd),
                Dataset.from_pandas(rdf, data_definition=dd),
            )
        scores = {}
        for m in snap.dict()["metrics"]:
            if m["config"]["type"].endswith("ValueDrift"):
                scores[m["config"]["column"]] = float(m["value"])
        return scores

    return run


def nannyml_runner(
    ref: dict[str, np.ndarray], cur: dict[str, np.ndarray], methods: tuple[str, str]
) -> Callable[[], Any] | None:
    try:
        import nannyml as nml
    except ImportError:
        return None
    names = [s.name for s in specs()]
    cats = [s.name for s in specs() if s.kind == "categorical"]
    rdf, cdf = pd.DataFrame(ref), pd.DataFrame(cur)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = nml.UnivariateDriftCalculator(
            column_names=names,
            treat_as_categorical=cats,
            chunk_size=len(cdf),
            continuous_methods=[methods[0]],
            categorical_methods=[methods[1]],
        )
        calc.fit(rdf)

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return calc.calculate(cdf)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="one repetition per measurement (< 1 minute)"
    )
    ap.add_argument(
        "--workers", type=int, default=2, help="threads for dataset_drift (default 2 = both cores)"
    )
    args = ap.parse_args(argv)
    quick = args.quick
    nml_pairs: list[tuple[str, str]] = [("kolmogorov_smirnov", "chi2")]
    if not quick:
        nml_pairs += [("jensen_shannon", "jensen_shannon"), ("wasserstein", "jensen_shannon")]

    print(
        f"# drift per window, {N_NUM} numerical + {N_CAT} categorical columns, workers={args.workers}"
    )
    t = time.perf_counter()
    import evidently  # noqa: F401  (import time is not part of any window)

    print(f"# evidently {evidently.__version__} imported in {time.perf_counter() - t:.1f} s")
    try:
        import nannyml

        print(f"# nannyml {nannyml.__version__}")
    except ImportError:
        print("# nannyml not installed: vs_nannyml_* = nan (pip install -e '.[bench]')")

    # warm-up: first Report run pays one-off costs
    warm_ref, warm_cur = make_columns(500, 1, False), make_columns(500, 2, True)
    evidently_runner(warm_ref, warm_cur)()

    results: dict[str, dict[str, float]] = {}
    max_diff = 0.0
    verdict_mismatch = 0
    for label, n in SIZES.items():
        ref = make_columns(n, 10 + n, False)
        # every timed window is a fresh draw (its own missing values, so its own
        # column sizes): nothing is reused from one window to the next
        reps_ours = 3 if quick else (15 if n <= 20_000 else 7)
        windows = [make_columns(n, 20 + n + k, True) for k in range(reps_ours + 1)]
        cur = windows[0]
        t = time.perf_counter()
        prepared = prepare_reference(ref, specs())
        t_prep = time.perf_counter() - t

        dataset_drift(prepared, windows[-1], workers=args.workers)  # warm the thread pool
        times = []
        ours = None
        for w in windows[:reps_ours]:
            t = time.perf_counter()
            res = dataset_drift(prepared, w, workers=args.workers)
            times.append(time.perf_counter() - t)
            ours = ours or res
        assert ours is not None
        t_ours = statistics.median(times)

        # robustness: a reference 1.5x the window (no equal-size shortcut anywhere)
        big_ref = prepare_reference(make_columns(n * 3 // 2, 30 + n, False), specs())
        times = []
        for w in windows[:reps_ours]:
            t = time.perf_counter()
            dataset_drift(big_ref, w, workers=args.workers)
            times.append(time.perf_counter() - t)
        t_ours_big = statistics.median(times)

        reps_ev = 1 if quick else (5 if n <= 1_000 else 3 if n <= 20_000 else 2)
        t_ev, ev_scores = timed(evidently_runner(ref, cur), reps_ev)

        for c in ours.columns:
            diff = abs(c.score - ev_scores[c.column])
            max_diff = max(max_diff, diff)
            drifted_ev = (c.score_kind == "p_value" and ev_scores[c.column] <= c.threshold) or (
                c.score_kind == "distance" and ev_scores[c.column] >= c.threshold
            )
            if abs(ev_scores[c.column] - c.threshold) > 1e-9 and drifted_ev != c.drifted:
                verdict_mismatch += 1

        t_nml = math.nan
        nml_detail = []
        if n >= 20_000:
            for pair in nml_pairs:
                runner = nannyml_runner(ref, cur, pair)
                if runner is None:
                    break
                runner()  # warm-up
                t_pair, _ = timed(runner, 1 if quick else 3)
                nml_detail.append(f"{pair[0]}/{pair[1]} {t_pair * 1000:.0f} ms")
                t_nml = t_pair if math.isnan(t_nml) else min(t_nml, t_pair)

        tests = sorted({c.test for c in ours.columns})
        results[label] = {"ours": t_ours, "evidently": t_ev, "nannyml": t_nml}
        del windows
        print(
            f"{label:>5}: ours {t_ours * 1000:8.1f} ms (prepare {t_prep * 1000:.0f} ms once; tests {','.join(tests)};"
            f" reference 1.5x window: {t_ours_big * 1000:.1f} ms)"
            f" | evidently {t_ev * 1000:8.0f} ms = {t_ev / t_ours:6.1f}x"
            + (
                f" | nannyml {t_nml * 1000:6.0f} ms = {t_nml / t_ours:4.1f}x [{'; '.join(nml_detail)}]"
                if nml_detail
                else ""
            )
        )
    print(
        f"# max |ours - evidently| over all columns and sizes: {max_diff:.3g}; verdict mismatches: {verdict_mismatch}"
    )

    def ratio(a: float, b: float) -> str:
        return "nan" if math.isnan(a) or math.isnan(b) else f"{a / b:.1f}"

    print(
        "RESULT"
        f" speedup_1k={ratio(results['1k']['evidently'], results['1k']['ours'])}"
        f" speedup_20k={ratio(results['20k']['evidently'], results['20k']['ours'])}"
        f" speedup_100k={ratio(results['100k']['evidently'], results['100k']['ours'])}"
        f" vs_nannyml_20k={ratio(results['20k']['nannyml'], results['20k']['ours'])}"
        f" vs_nannyml_100k={ratio(results['100k']['nannyml'], results['100k']['ours'])}"
        f" max_abs_diff={max_diff:.2g}"
    )
    return 0 if verdict_mismatch == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
