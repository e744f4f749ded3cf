"""Read commands answer at once: ``driftwarden windows``, ``alerts``, ``status`` and ``--help``
on a state dir with many windows, against the floor of starting Python and importing the CLI.

A state dir is filled with ``N`` windows (6 figures each), alerts and deliveries through the
store's own writers. Each command runs as a fresh process, as a user runs it; the median of
``--repeat`` runs is reported. The peer/limit measured in the same run: ``python -c pass``
(the interpreter alone) and importing the CLI module (``import monitor.cli.app``). Also
reported: whether a read command imported pandas, evidently or sqlite_utils (it must not).

    python bench/cli_read.py            # 20,000 windows, 7 runs each
    python bench/cli_read.py --quick    # 2,000 windows, 3 runs each

Ends with: RESULT python_s=… import_cli_s=… help_s=… windows_s=… alerts_s=… status_s=…
heavy_imports=0 windows_stored=…
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, not an installed copy

from storage.db import Store  # noqa: E402
from storage.records import MetricRow, WindowKey, WindowRecord  # noqa: E402
from storage.windows import write_window  # noqa: E402

T0 = datetime(2026, 11, 23, tzinfo=UTC)


def fill(state: Path, n: int) -> None:
    store = Store(state / "driftwarden.db", synchronous="NORMAL")
    with store.transaction():
        for i in range(n):
            start = T0 + timedelta(minutes=i)
            key = WindowKey("churn", "v1", "" if i % 4 == 0 else f"region=r{i % 4}", start.isoformat(), (start + timedelta(minutes=1)).isoformat())
            rows = [MetricRow("", "row_count", 300.0), MetricRow("", "drift_share", 0.2 + (i % 5) / 10, 0.5, i % 5 >= 3)]
            rows += [MetricRow(c, "drift_score", 0.05 * (i % 7), 0.1, i % 7 >= 2, test="wasserstein") for c in ("age", "plan", "region", "tenure_days")]
            write_window(store, WindowRecord(key, 300, "ok", start), rows)
        for i in range(200):
            store.execute(
                "INSERT INTO alerts (id, rule, model, state, value, threshold, severity, started_at, updated_at)"
                " VALUES (?, 'dataset-drift', 'churn', ?, 0.6, 0.5, 'critical', ?, ?)",
                (f"alr_{i}", "resolved" if i else "firing", T0.isoformat(), (T0 + timedelta(hours=i)).isoformat()),
            )
    store.close()


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def heavy(state: Path) -> int:
    code = (
        "import sys, runpy; sys.argv = ['driftwarden', 'windows', '--state-dir', sys.argv[1]];\n"
        "try:\n    runpy.run_module('monitor.cli.app', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(len({m.split('.')[0] for m in sys.modules} & {'pandas', 'evidently', 'sqlite_utils'}), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True, check=True)
    return int(out.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args()
    n = 2_000 if args.quick else 20_000
    repeat = args.repeat or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        fill(state, n)
        cli = [sys.executable, "-m", "monitor.cli.app"]
        res = {
            "python_s": timed([sys.executable, "-c", "pass"], repeat),
            "import_cli_s": timed([sys.executable, "-c", "import monitor.cli.app"], repeat),
            "help_s": timed([*cli, "--help"], repeat),
            "windows_s": timed([*cli, "windows", "--state-dir", str(state)], repeat),
            "alerts_s": timed([*cli, "alerts", "--state-dir", str(state)], repeat),
            "status_s": timed([*cli, "status", "--state-dir", str(state)], repeat),
        }
        for k, v in res.items():
            print(f"{k:>14}: {v:.3f} s")
        print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in res.items()) + f" heavy_imports={heavy(state)} windows_stored={n}")


if __name__ == "__main__":
    main()
