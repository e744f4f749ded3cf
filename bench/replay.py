"""``driftwarden replay`` per file format: the same events (the demo's churn model, 5
features and a region segment, one-minute tumbling windows of 1,000 rows) as JSON lines,
flattened CSV, flattened Parquet and nested Parquet (struct columns), each replayed into a
new folder of a temporary directory; rows per CPU-second of the best of ``--repeat`` runs.

A JSON line is the message as it is; a CSV or Parquet row becomes the message it stands for
(:mod:`monitor.service.replay_messages`), which is the cost this measures. Ends with one
line: ``RESULT jsonl_rps=… csv_rps=… parquet_rps=… nested_parquet_rps=… csv_vs_jsonl=…
parquet_vs_jsonl=…`` (a ratio is the format's rate over JSON lines': 1.0 means shaping the
rows costs nothing).

    python bench/replay.py              # 100k rows, best of 3 (~1 min)
    python bench/replay.py --quick      # 20k rows, best of 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from monitor.config import load_config  # noqa: E402
from monitor.demo.data import events, write_reference_csv  # noqa: E402
from monitor.service.replay import run_replay  # noqa: E402

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # history: before any run of the bench

CONFIG = """
[daemon]
state_dir = "state"

[kafka]
bootstrap_servers = ["127.0.0.1:9"]
predictions_topic = "t"

[[models]]
name = "churn"
reference = "reference.csv"
segments = ["region"]
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]
[models.window]
type = "tumbling"
size = "1m"
min_rows = 50
idle_timeout = "2s"
"""


def make_files(folder: Path, rows: int) -> dict[str, Path]:
    """The config, and the same ``rows`` events in each format (drifting from the middle)."""
    import pandas as pd  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    write_reference_csv(str(folder / "reference.csv"), n=3000, seed=7)
    (folder / "config.toml").write_text(CONFIG)
    windows = max(1, rows // 1000)
    evs = list(events(model="churn", start=START, windows=windows, per_window=rows // windows,
                      window_seconds=60, shift_from=windows // 2, seed=17))
    files = {k: folder / f"events.{k}" for k in ("jsonl", "csv", "parquet")}
    files["jsonl"].write_bytes(b"\n".join(orjson.dumps(e) for e in evs) + b"\n")
    flat = pd.json_normalize(evs, sep=".")
    flat.to_csv(files["csv"], index=False)
    flat.to_parquet(files["parquet"], index=False)
    files["nested_parquet"] = folder / "nested.parquet"
    pq.write_table(pa.Table.from_pylist(evs), files["nested_parquet"])
    return files


def rows_per_cpu_second(folder: Path, data: Path, repeat: int) -> tuple[float, int]:
    """Best rows per CPU-second of ``repeat`` replays of ``data`` (and the windows of one)."""
    cfg = load_config(folder / "config.toml")
    best, windows = 0.0, 0
    for i in range(repeat):
        t0 = time.process_time()
        res = run_replay(cfg, data, folder / f"out-{data.stem}-{data.suffix[1:]}-{i}")
        cpu = time.process_time() - t0
        best, windows = max(best, res.rows / cpu), res.windows
        if res.dead_letters:
            raise SystemExit(f"{data.name}: {res.dead_letters} dead letters; every row should be accepted")
    return best, windows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20k rows, best of 2")
    ap.add_argument("--rows", type=int, default=None, help="rows per file (default 100,000)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per format (default 3)")
    args = ap.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (2 if args.quick else 3)
    got: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dw-bench-replay-") as tmp:
        folder = Path(tmp)
        files = make_files(folder, rows)
        seen = set()
        for name, path in files.items():
            got[name], windows = rows_per_cpu_second(folder, path, repeat)
            seen.add(windows)
            print(f"{name:>15}: {got[name]:9.0f} rows per CPU-second ({windows} windows)", flush=True)
        if len(seen) != 1:
            raise SystemExit(f"the formats gave different windows: {sorted(seen)}")
    print(f"RESULT jsonl_rps={got['jsonl']:.0f} csv_rps={got['csv']:.0f} parquet_rps={got['parquet']:.0f}"
          f" nested_parquet_rps={got['nested_parquet']:.0f} csv_vs_jsonl={got['csv'] / got['jsonl']:.3f}"
          f" parquet_vs_jsonl={got['parquet'] / got['jsonl']:.3f}")


if __name__ == "__main__":
    main()
