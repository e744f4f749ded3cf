"""Calibrations kept in the state dir: a restart reads them back instead of calibrating
every reference again, equal to the ones computed; changed inputs make a new one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pytest

from detectors import calibrate
from detectors.calibration import CALIBRATION_VERSION, calibration_from_dict, calibration_to_dict
from detectors.spec import ColumnSpec
from monitor.references.calibration_cache import CalibrationCache, _sealed
from monitor.references.load import ReferenceSpec, load_reference
from monitor.service.pipeline import Pipeline
from monitor.windows.figures import PreparedModel
from tests.monitor.service.test_detection_modes import figures, make_config, run, stationary


def _calibration() -> object:
    rng = np.random.default_rng(3)
    cols = {"x": rng.normal(size=400), "c": rng.choice(np.array(["a", "b", "c"], dtype=object), 400)}
    specs = [ColumnSpec("x", "numerical", "ks"), ColumnSpec("c", "categorical", "chisquare")]
    return calibrate(cols, specs, sizes=(50, 200), resamples=40, splits=5)


def test_a_calibration_reads_back_equal_and_only_of_its_own_version() -> None:
    cal = _calibration()
    data = orjson.loads(orjson.dumps(calibration_to_dict(cal)))  # type: ignore[arg-type]
    assert calibration_from_dict(data) == cal
    with pytest.raises(ValueError, match=f"expected {CALIBRATION_VERSION}"):
        calibration_from_dict({**data, "version": CALIBRATION_VERSION - 1})
    with pytest.raises(ValueError, match="not a stored calibration"):
        calibration_from_dict({"version": CALIBRATION_VERSION})


def test_the_cache_computes_once_survives_damage_and_stays_bounded(tmp_path: Path) -> None:
    cal = _calibration()
    calls: list[int] = []

    def compute() -> object:
        calls.append(1)
        return cal

    specs = [ColumnSpec("x", "numerical", "ks")]
    key = CalibrationCache.key("ab" * 32, specs, {"sizes": [50, 200], "alpha": 0.01})
    assert key != CalibrationCache.key("ab" * 32, specs, {"sizes": [50, 200], "alpha": 0.02})
    assert key != CalibrationCache.key("cd" * 32, specs, {"sizes": [50, 200], "alpha": 0.01})
    folder = tmp_path / "calibration"
    assert CalibrationCache(folder).get_or_compute(key, compute) == cal
    again = CalibrationCache(folder)  # another start
    assert again.get_or_compute(key, compute) == cal
    assert (len(calls), again.hits, again.misses) == (1, 1, 0)
    assert os.stat(folder / f"{key}.json").st_mode & 0o777 == 0o600
    (folder / f"{key}.json").write_bytes(b"{half a fi")  # a damaged file is made again
    assert CalibrationCache(folder).get_or_compute(key, compute) == cal
    assert len(calls) == 2
    small = CalibrationCache(folder, keep=3)
    for i in range(6):
        small.get_or_compute(f"{i:064x}", compute)
    assert len(list(folder.glob("*.json"))) == 3


def test_a_restart_reads_the_calibration_and_judges_alike(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {}, {"thresholds": "calibrated"})
    chunks = stationary(3)
    first = figures(run(cfg, chunks))
    store = run(cfg, [])  # a second start on the same state dir
    p = Pipeline(cfg, store)
    assert (p.calibration_cache.hits, p.calibration_cache.misses) == (1, 0)
    rt = p.models["m"]
    computed = PreparedModel.build(rt.config, rt.schema, load_reference(rt.config.reference, ReferenceSpec.from_config(rt.config)))
    assert rt.prepared.calibration == computed.calibration  # read back: the same thresholds
    # new drift settings: another calibration, computed
    other = make_config(tmp_path, {}, {"thresholds": "calibrated", "alpha_column": 0.05})
    q = Pipeline(other, store)
    assert (q.calibration_cache.hits, q.calibration_cache.misses) == (0, 1)
    assert first and len(list((Path(cfg.daemon.state_dir) / "calibration").glob("*.json"))) == 2


def test_a_stored_calibration_unlike_the_inputs_or_not_a_file_is_computed_again(tmp_path: Path) -> None:
    """A file that parsed was used as it was: one saying alpha_column 0.5 made every window
    drift, one with no columns switched detection off, and a FIFO there hung the start."""
    cfg = make_config(tmp_path, {}, {"thresholds": "calibrated"})
    store = run(cfg, [])
    folder = Path(cfg.daemon.state_dir) / "calibration"
    (stored,) = folder.glob("*.json")
    sealed = orjson.loads(stored.read_bytes())
    good = sealed["calibration"]
    for bad in ({**sealed, "calibration": {**good, "alpha_column": 0.5}},  # damaged: hash fails
                {**sealed, "calibration": {**good, "columns": []}},
                _sealed({**good, "alpha_column": 0.5}),  # well sealed, unlike the inputs
                _sealed({**good, "columns": [{**good["columns"][0], "body": [[1.0]]}]}),  # malformed
                {"calibration": good}):
        stored.write_bytes(orjson.dumps(bad))
        p = Pipeline(cfg, store)
        assert (p.calibration_cache.hits, p.calibration_cache.misses) == (0, 1), bad
        assert orjson.loads(stored.read_bytes()) == sealed  # replaced by the one computed
    stored.unlink()
    os.mkfifo(stored)
    p = Pipeline(cfg, store)  # neither hangs nor fails
    assert (p.calibration_cache.hits, p.calibration_cache.misses) == (0, 1)
    store.close()


def test_the_key_holds_the_draws_and_the_code() -> None:
    from monitor.windows.figures import CALIBRATION_DRAWS

    specs = [ColumnSpec("x", "numerical", "ks")]
    base = {"sizes": [50], **CALIBRATION_DRAWS}
    assert CalibrationCache.key("ab" * 32, specs, base) != CalibrationCache.key(
        "ab" * 32, specs, {**base, "resamples": 800})
    assert CalibrationCache.key("ab" * 32, specs, base) != CalibrationCache.key(
        "ab" * 32, [ColumnSpec("x", "numerical", "wasserstein")], base)
