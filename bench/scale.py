"""Scale: the pipeline's rate and memory against the number of models, the window shape
and the number of columns, each scenario measured in its own process in one run.

The real Pipeline (decode, caps, windows, drift + quality figures per closed window,
one SQLite transaction per batch) is fed 10k-record batches of ~25-column JSON
events directly, without Kafka, so the figures isolate what scales in our code:

- models: the same total events spread over 1, 10, 100 (and 1,000 with ``--full``)
  models, each with its own 2,000-row reference; ``models100_vs_1`` is the ratio of
  the 100-model rate to the 1-model rate (target >= 0.8);
- sliding: 12-minute windows sliding by 1 minute (12 open windows per stream) vs
  12-minute tumbling windows; ``sliding_vs_tumbling`` (target >= 0.8);
- width: 25, 200 (and 1,000 with ``--full``) columns; ``cols200_eps``;
- memory: RSS added per model at start-up (``rss_mb_per_model``) against the size of
  the reference's own arrays (``ref_mb_per_model``; target: at most 2x).

Rates are events per second of CPU time of the measuring process (robust to other
load on the machine). There is no peer here: the targets are ratios of our own
scenarios. Ends with one line:
``RESULT models100_vs_1=… sliding_vs_tumbling=… rss_mb_per_model=… ref_mb_per_model=… cols200_eps=… startup_s_100=…``

    python bench/scale.py            # 200k events per scenario, a few minutes
    python bench/scale.py --repeat 3 # each scenario's fastest of 3 alternating rounds (each
                                     # scenario's best is kept apart, so a ratio of bests
                                     # may differ from any one round's ratio)
    python bench/scale.py --full     # also 1,000 models, 1,000 columns, the 100k-row start-up
    python bench/scale.py --startup  # only the 100k-row start-up (writes ~1.2 GB, removed after)
    python bench/scale.py --quick    # 40k events, under a minute: a smoke test, not figures;
                                     # 3 windows per model instead of 19 and 10k-row sliding
                                     # windows weigh each window's fixed cost far more
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections import namedtuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Rec = namedtuple("Rec", "topic partition offset timestamp value")
CATS = np.array(["alpha", "beta", "gamma", "delta", "epsilon"], dtype=object)
BASE = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)


def columns(width: int) -> tuple[list[str], list[str]]:
    n_cat = max(1, width // 5)
    return [f"n{i}" for i in range(width - n_cat)], [f"c{i}" for i in range(n_cat)]


def write_reference(path: Path, num: list[str], cat: list[str], rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    nums = rng.normal(50, 10, (rows, len(num))).round(3)
    cats = rng.choice(CATS, (rows, len(cat)))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*num, *cat, "prediction"])
        for i in range(rows):
            w.writerow([*nums[i].tolist(), *cats[i].tolist(), float(nums[i, 0]) / 100])


def make_events(n: int, models: int, num: list[str], cat: list[str], per_minute: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    nums = rng.normal(50, 10, (n, len(num))).round(3)
    cats = rng.choice(CATS, (n, len(cat)))
    out = []
    for i in range(n):
        feats: dict[str, object] = {k: float(nums[i, j]) for j, k in enumerate(num)}
        feats.update({k: str(cats[i, j]) for j, k in enumerate(cat)})
        out.append(orjson.dumps({
            "event_id": f"e{i:09d}", "model": f"m{i % models}", "version": "v1",
            "ts": BASE + (i * 60_000) // per_minute, "features": feats, "prediction": float(nums[i, 0] / 100),
        }))
    return out


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepare(args: dict[str, Any]) -> tuple[Any, list[Rec], dict[str, Any]]:
    """One scenario built: its pipeline (references written, started up), its records, and
    what start-up measured (``startup_s``, ``rss_mb_per_model``, ``ref_mb_per_model``)."""
    from monitor.config import parse_config
    from monitor.service.heap import release_free_memory, settle_heap
    from monitor.service.pipeline import Pipeline
    from storage.db import Store

    tmp = Path(tempfile.mkdtemp(prefix="scale-"))
    num, cat = columns(args["width"])
    models = []
    for m in range(args["models"]):
        ref = f"ref{m}.csv"
        write_reference(tmp / ref, num, cat, args["ref_rows"], seed=m)
        if args.get("ref_format") == "parquet":
            import pandas as pd  # noqa: PLC0415 - only this scenario converts

            pd.read_csv(tmp / ref).to_parquet(tmp / f"ref{m}.parquet")
            (tmp / ref).unlink()
            ref = f"ref{m}.parquet"
        models.append({
            "name": f"m{m}", "reference": ref,
            "features": {"numerical": num, "categorical": cat}, "window": args["window"],
        })
    cfg = parse_config({"daemon": {"state_dir": "state"}, "kafka": {"predictions_topic": "t"}, "models": models},
                       base_dir=tmp)
    payloads = make_events(args["events"], args["models"], num, cat, args["per_minute"])
    recs = [Rec("t", 0, i, BASE + 86_400_000, v) for i, v in enumerate(payloads)]
    del payloads
    gc.collect()  # as settle_heap() does after start-up, so both readings are taken alike
    release_free_memory()  # what making the events freed: not counted against start-up below
    before = rss_mb()
    t0 = time.perf_counter()
    p = Pipeline(cfg, Store.in_state_dir(cfg.daemon.state_dir, synchronous="NORMAL"),
                 clock=lambda: datetime.fromtimestamp(BASE / 1000 + 86_400, UTC))
    startup_s = time.perf_counter() - t0
    # as `driftwarden run` does once started: full collections then skip the start-up heap
    # (without it, 100 models' references made each gen-2 pause ~0.12 s, ~9 % of that run),
    # and the pages start-up freed go back to the system
    settle_heap()
    ref_mb = (args["ref_rows"] * (len(num) + 1) * 8 + args["ref_rows"] * len(cat) * 8) / 2**20
    return p, recs, {"startup_s": startup_s, "rss_mb_per_model": (rss_mb() - before) / args["models"],
                     "ref_mb_per_model": ref_mb}


def feed(p: Any, recs: list[Rec]) -> None:
    """What a scenario measures: the records through the pipeline in 10k-record batches,
    each flushed (figures of the windows it closed, one SQLite transaction)."""
    for i in range(0, len(recs), 10_000):
        p.process_records(recs[i:i + 10_000])
        p.flush()


def scenario(args: dict[str, Any], out: Any) -> None:
    """One measurement in a fresh process: build the pipeline, feed the events, report."""
    p, recs, info = prepare(args)
    if args.get("startup_only"):
        out.put({"eps": float("nan"), **info, "windows": 0, "peak_rss_mb": rss_mb()})
        p.store.close()
        shutil.rmtree(Path(p.config.daemon.state_dir).parent, ignore_errors=True)  # ~1.2 GB of references
        return
    cpu0 = time.process_time()
    feed(p, recs)
    cpu = time.process_time() - cpu0
    out.put({"eps": len(recs) / cpu, **info, "windows": p.stats.windows_closed, "peak_rss_mb": rss_mb()})
    p.store.close()
    shutil.rmtree(Path(p.config.daemon.state_dir).parent, ignore_errors=True)  # references and the store


#: 12-minute tumbling windows (the sliding scenario's counterpart)
TUMBLING = {"type": "tumbling", "size": "12m", "lateness": "0s", "min_rows": 50, "idle_timeout": "1h"}
#: the 1-minute tumbling windows of the model, width and start-up scenarios
ONE_MINUTE = {**TUMBLING, "size": "1m"}


def scenarios(n: int, full: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every scenario of a run of ``n`` events: name -> (label, arguments of :func:`prepare`);
    ``full`` adds 1,000 models, 1,000 columns and :func:`startup_scenarios`."""
    sliding = {**TUMBLING, "type": "sliding", "slide": "1m"}
    common = {"events": n, "ref_rows": 2000, "per_minute": 10_000}
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for k in (1, 10, 100, *((1000,) if full else ())):
        out[f"models{k}"] = (f"{k} model(s), 25 columns", {"models": k, "width": 25, "window": ONE_MINUTE, **common})
    # 48 minutes of event time: 4 tumbling windows close, and 48 sliding ones
    spread = {**common, "per_minute": n // 48}
    out["tumbling"] = ("tumbling 12m", {"models": 1, "width": 25, "window": TUMBLING, **spread})
    out["sliding"] = ("sliding 12m by 1m", {"models": 1, "width": 25, "window": sliding, **spread})
    if full:
        out.update(startup_scenarios())
    for w in (200, *((1000,) if full else ())):
        # a quarter of the events over 5 minutes of event time: 4 windows close whatever n is
        out[f"cols{w}"] = (f"1 model, {w} columns", {"models": 1, "width": w, "window": ONE_MINUTE,
                                                     **{**common, "events": n // 4, "per_minute": max(1, n // 20)}})
    return out


def startup_scenarios() -> dict[str, tuple[str, dict[str, Any]]]:
    """Start-up alone: 100 models, each its own 100k-row reference (read, validated,
    prepared), as CSV and as Parquet."""
    return {
        f"startup100_100k_{fmt}": (f"start-up, 100 models x 100k rows, {fmt}", {
            "models": 100, "width": 25, "window": ONE_MINUTE, "events": 100, "ref_rows": 100_000,
            "per_minute": 10_000, "startup_only": True, "ref_format": fmt,
        })
        for fmt in ("csv", "parquet")
    }


def events(quick: bool) -> int:
    """Events per scenario: 200k, ``--quick`` 40k."""
    return 40_000 if quick else 200_000


def run(name: str, **kw: Any) -> dict[str, Any]:
    q: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=scenario, args=(kw, q))
    proc.start()
    res = q.get()
    proc.join()
    if kw.get("startup_only"):
        print(f"{name:<34} start-up {res['startup_s']:5.1f}s  RSS/model {res['rss_mb_per_model']:5.2f} MB"
              f" (reference arrays {res['ref_mb_per_model']:.2f} MB)", flush=True)
        return res
    print(f"{name:<28} {res['eps']:>9,.0f} events/s  windows {res['windows']:>5}  start-up {res['startup_s']:5.1f}s"
          f"  RSS/model {res['rss_mb_per_model']:5.2f} MB (reference arrays {res['ref_mb_per_model']:.2f} MB)",
          flush=True)
    return res


def _faster(a: dict[str, Any], b: dict[str, Any], *, start_up_only: bool) -> bool:
    """Whether round ``a`` beats round ``b``: the higher rate, or for a start-up-only
    scenario (no rate) the shorter start-up."""
    return a["startup_s"] < b["startup_s"] if start_up_only else a["eps"] > b["eps"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full", action="store_true", help="also 1,000 models, 1,000 columns and the 100k-row start-up")
    ap.add_argument("--startup", action="store_true",
                    help="only start-up with 100 models of 100k-row references (writes ~1.2 GB of CSV, then Parquet, to a temporary folder)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run every scenario N times, in alternating rounds, and keep each one's fastest "
                         "(its RSS and start-up from that round too); rates of one run swing by ±15 %%")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    chosen = startup_scenarios() if a.startup else scenarios(events(a.quick), a.full)
    res: dict[str, dict[str, Any]] = {}
    for r in range(a.repeat):
        if a.repeat > 1:
            print(f"round {r + 1} of {a.repeat}", flush=True)
        for name, (label, kw) in chosen.items():
            got = run(label, **kw)
            if name not in res or _faster(got, res[name], start_up_only=bool(kw.get("startup_only"))):
                res[name] = got
    if a.startup:
        c, q = res["startup100_100k_csv"], res["startup100_100k_parquet"]
        print(f"RESULT startup_s_100x100k_csv={c['startup_s']:.2f} startup_s_100x100k_parquet={q['startup_s']:.2f}"
              f" rss_mb_per_model_100k={c['rss_mb_per_model']:.2f} ref_mb_per_model_100k={c['ref_mb_per_model']:.2f}")
        return
    result = {
        "models100_vs_1": res["models100"]["eps"] / res["models1"]["eps"],
        "sliding_vs_tumbling": res["sliding"]["eps"] / res["tumbling"]["eps"],
        "rss_mb_per_model": res["models100"]["rss_mb_per_model"],
        "ref_mb_per_model": res["models100"]["ref_mb_per_model"],
        "cols200_eps": res["cols200"]["eps"],
        "startup_s_100": res["models100"]["startup_s"],
    }
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    print("RESULT " + " ".join(f"{k}={v:.3f}" if v < 100 else f"{k}={v:.0f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
