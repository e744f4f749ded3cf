"""Every option of the detection modes changes the stored figures: thresholds, reference
modes (rolling, seasonal, include_drifted), multiple testing, multivariate drift.

The pipeline runs for real (reference file, windows, detectors, SQLite); batches are fed
to it directly instead of through Kafka.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import Config, parse_config
from monitor.ingest.batch import ColumnBatch
from monitor.service.pipeline import Pipeline
from storage.db import StorageError, Store
from tests.store_targets import StoreTarget, open_state_store, state_cli_args

HOUR = 3_600_000
CATS = np.array(["a", "b", "c"], dtype=object)


def rows(rng: np.random.Generator, n: int, *, mean: float = 0.0, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "x": rng.normal(mean, scale, n),
        "y": rng.normal(0.0, 1.0, n),
        "z": rng.exponential(1.0, n),
        "c": rng.choice(CATS, n, p=[0.5, 0.3, 0.2]),
        "prediction": rng.random(n),
    }


def write_reference(path: Path, cols: dict[str, np.ndarray]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        for i in range(len(cols["x"])):
            w.writerow([cols[c][i] for c in cols])


def make_config(tmp: Path, model: dict[str, Any], drift: dict[str, Any] | None = None,
                window: dict[str, Any] | None = None) -> Config:
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "ref.csv").exists():
        write_reference(tmp / "ref.csv", rows(np.random.default_rng(7), 3000))
    data = {
        "daemon": {"state_dir": "state"},
        "models": [{
            "name": "m", "reference": "ref.csv", "layout": "flat",
            "features": {"numerical": ["x", "y", "z"], "categorical": ["c"]},
            "window": window or {"by": "count", "size": 500, "min_rows": 50},
            "drift": drift or {},
            **model,
        }],
    }
    return parse_config(data, base_dir=tmp)


def batch(cols: dict[str, np.ndarray], first_offset: int, ts_ms: np.ndarray | None = None) -> ColumnBatch:
    n = len(cols["x"])
    offs = np.arange(first_offset, first_offset + n, dtype=np.int64)
    return ColumnBatch(
        model="m",
        ts_ms=ts_ms if ts_ms is not None else offs.copy(),
        partition=np.zeros(n, dtype=np.int32),
        offset=offs,
        event_id=np.array([f"e{o}" for o in offs], dtype=object),
        version=np.array(["v1"] * n, dtype=object),
        segments={},
        columns=dict(cols),
    )


def run(cfg: Config, chunks: list[dict[str, np.ndarray]], *, first_offset: int = 0,
        ts: list[np.ndarray] | None = None, store: Store | None = None) -> Store:
    store = store or open_state_store(cfg.daemon.state_dir, synchronous="NORMAL")
    p = Pipeline(cfg, store)
    p.restore()
    off = first_offset
    for i, c in enumerate(chunks):
        n = len(c["x"])
        p.process({"m": batch(c, off, None if ts is None else ts[i])}, [], {0: off + n})
        off += n
        p.flush()
    return store


def figures(store: Store) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in store.query(
        'SELECT window_id, "column", metric, value, p_value, threshold, drifted, test FROM metrics '
        "WHERE metric IN ('drift_score', 'drift_share', 'prediction_drift', 'multivariate_auc') "
        'ORDER BY window_id, "column", metric')]


def verdicts(store: Store) -> list[bool]:
    return [bool(r["drifted"]) for r in store.query(
        "SELECT m.drifted FROM metrics m JOIN windows w ON w.id = m.window_id "
        "WHERE m.metric = 'drift_share' ORDER BY w.start")]


def stationary(n_windows: int, seed: int = 1, size: int = 500) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [rows(rng, size) for _ in range(n_windows)]


# --------------------------------------------------------------------------- thresholds


def test_calibrated_thresholds_are_stored_and_differ_from_evidently(tmp_path: Path) -> None:
    chunks = stationary(4)
    ev = run(make_config(tmp_path / "e", {}), chunks)
    ca = run(make_config(tmp_path / "c", {}, {"thresholds": "calibrated"}), chunks)
    e_rows = {(r[0], r[1], r[2]): r for r in figures(ev)}
    c_rows = {(r[0], r[1], r[2]): r for r in figures(ca)}
    assert e_rows.keys() == c_rows.keys() and len(e_rows) == 4 * 6
    for k, e in e_rows.items():
        c = c_rows[k]
        if k[2] == "drift_score":
            assert e[3] == pytest.approx(c[3])  # same test, same score
            assert e[5] == 0.1  # Evidently's distance threshold
            assert 0.0 < c[5] < 0.2 and c[5] != e[5]  # calibrated for 500 rows vs 3000
            assert e[4] is None and 0.0 <= c[4] <= 1.0  # calibrated p-value even for distances
        if k[2] == "drift_share":
            assert e[5] == 0.5 and c[5] in (0.25, 0.5, 0.75, 1.0)  # k of 4 columns


def test_alpha_and_alpha_column_change_the_thresholds(tmp_path: Path) -> None:
    chunks = stationary(2)
    loose = figures(run(make_config(tmp_path / "a", {}, {"thresholds": "calibrated", "alpha_column": 0.2}), chunks))
    strict = figures(run(make_config(tmp_path / "b", {}, {"thresholds": "calibrated", "alpha_column": 0.001}), chunks))
    for lo, hi in zip(loose, strict, strict=True):
        if lo[2] == "drift_score":
            assert lo[5] < hi[5]  # distances: a stricter level needs a larger distance
    a1 = figures(run(make_config(tmp_path / "c", {}, {"thresholds": "calibrated", "alpha": 0.3}), chunks))
    a2 = figures(run(make_config(tmp_path / "d", {}, {"thresholds": "calibrated", "alpha": 0.0001}), chunks))
    share = [(x[5], y[5]) for x, y in zip(a1, a2, strict=True) if x[2] == "drift_share"]
    assert all(x < y for x, y in share)


def test_an_alpha_the_columns_cannot_reach_is_logged_at_start_up_and_on_new_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.windows.figures import PreparedModel

    # 4 columns at alpha_column 0.5: even "all 4 drifted" happens in >= 1/16 of windows
    cfg = make_config(tmp_path, {}, {"thresholds": "calibrated", "alpha_column": 0.5, "alpha": 0.001})
    store = open_state_store(cfg.daemon.state_dir, synchronous="NORMAL")
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):
        p = Pipeline(cfg, store)
    warned = [r.getMessage() for r in caplog.records if "drift.alpha" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(
        "model m: drift.alpha = 0.001 cannot be reached with 4 drift columns at drift.alpha_column = 0.5"), warned
    assert "set drift.alpha_column to at most" in warned[0]
    rt = p.models["m"]
    assert rt.prepared.calibration is not None and rt.prepared.calibration.dataset_threshold(4) == 4
    caplog.clear()
    ok = make_config(tmp_path, {}, {"thresholds": "calibrated"}).models[0]
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):
        p.use_prepared("m", PreparedModel.build(ok, rt.schema, load_ref(ok)))  # what a reload does
    assert "drift.alpha" not in caplog.text  # 0.01 is reachable with 4 columns at 0.01
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):
        p.use_prepared("m", PreparedModel.build(cfg.models[0], rt.schema, load_ref(cfg.models[0])))
    assert "model m: drift.alpha = 0.001 cannot be reached" in caplog.text
    store.close()


def load_ref(m: Any) -> Any:
    from monitor.references.load import ReferenceSpec, load_reference

    return load_reference(m.reference, ReferenceSpec.from_config(m))


def test_bh_adjusts_calibrated_p_values_of_distance_tests(tmp_path: Path) -> None:
    chunks = stationary(2)
    plain = figures(run(make_config(tmp_path / "a", {}, {"thresholds": "calibrated"}), chunks))
    bh = figures(run(make_config(tmp_path / "b", {}, {"thresholds": "calibrated", "multiple_testing": "bh"}), chunks))
    changed = [(p, q) for p, q in zip(plain, bh, strict=True) if p[2] == "drift_score" and p[4] != q[4]]
    assert changed and all(q[4] >= p[4] for p, q in changed)
    assert all(p[7] in ("wasserstein", "jensenshannon") for p, _ in changed)


def test_multivariate_domain_classifier_is_stored_with_its_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    chunks = [rows(rng, 500)]
    shifted = rows(rng, 500)
    shifted["y"] = shifted["x"] + rng.normal(0, 0.3, 500)  # a new correlation, same marginals-ish
    chunks.append(shifted)
    ev = figures(run(make_config(tmp_path / "a", {}, {"multivariate": "domain_classifier"}), chunks))
    auc = [r for r in ev if r[2] == "multivariate_auc"]
    assert [r[5] for r in auc] == [0.55, 0.55]
    assert auc[0][6] == 0 and auc[1][6] == 1 and auc[1][3] > 0.6
    ca = figures(run(make_config(tmp_path / "b", {}, {"thresholds": "calibrated", "multivariate": "domain_classifier"}), chunks))
    cauc = [r for r in ca if r[2] == "multivariate_auc"]
    assert all(0.5 < r[5] < 0.6 and r[5] != 0.55 for r in cauc)
    assert cauc[1][6] == 1


# --------------------------------------------------------------------------- reference modes


def trending(n_windows: int, seed: int = 5, step: float = 0.08) -> list[dict[str, np.ndarray]]:
    """x's mean creeps up by ``step`` standard deviations per window."""
    rng = np.random.default_rng(seed)
    return [rows(rng, 500, mean=step * i) for i in range(n_windows)]


def test_rolling_differs_from_fixed_on_a_trending_stream(tmp_path: Path) -> None:
    chunks = trending(12)
    fixed = run(make_config(tmp_path / "f", {}), chunks)
    # three windows: 1,500 rows, so `auto` keeps Wasserstein (at <= 1,000 it would pick KS)
    rolling = run(make_config(tmp_path / "r", {"reference_mode": "rolling", "reference_windows": 3}), chunks)
    assert figures(fixed) != figures(rolling)
    x_fixed = [r[3] for r in figures(fixed) if r[1] == "x" and r[2] == "drift_score"]
    x_roll = [r[3] for r in figures(rolling) if r[1] == "x" and r[2] == "drift_score"]
    # the first three windows have no rolling reference yet: judged against the file
    assert x_roll[:3] == pytest.approx(x_fixed[:3])
    # later, fixed sees the whole trend, rolling only the last steps
    assert min(x_fixed[8:]) > 0.5 and max(x_roll[8:]) < 0.35
    labels = [r["reference"] for r in rolling.query("SELECT reference FROM windows ORDER BY start")]
    assert len(set(labels[:3])) == 1 and all(lb.startswith("rolling:") for lb in labels[3:])
    assert len(set(labels[3:])) == 9
    assert rolling.query("SELECT COUNT(*) AS n FROM reference_members")[0]["n"] <= 4


def test_rolling_reference_survives_a_restart(tmp_path: Path, store_target: StoreTarget) -> None:
    """On SQLite and PostgreSQL: the members come back from the store after a restart."""
    chunks = trending(10)
    model = {"reference_mode": "rolling", "reference_windows": 3}
    whole = run(make_config(tmp_path / "a", model), chunks, store=store_target.fresh().open())
    cfg = make_config(tmp_path / "b", model)
    first = run(cfg, chunks[:6], store=store_target.open())
    first.close()
    # a new process: members from the store
    second = run(cfg, chunks[6:], first_offset=6 * 500, store=store_target.open())
    assert figures(second) == figures(whole)


def test_a_damaged_member_is_skipped_at_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A member blob that cannot be read (damaged, or written by another program) is left
    out with a warning naming its window; the daemon comes up on the members it can read."""
    chunks = trending(6)
    model = {"reference_mode": "rolling", "reference_windows": 3}
    cfg = make_config(tmp_path / "a", model)
    store = run(cfg, chunks)
    ids = [r["window_id"] for r in store.query("SELECT window_id FROM reference_members ORDER BY start")]
    assert len(ids) >= 2
    with store.transaction():
        store.execute("UPDATE reference_members SET payload = ? WHERE window_id = ?", (b"\x00 damaged", ids[0]))
    with caplog.at_level("WARNING", logger="driftwarden.references"):
        p = Pipeline(cfg, store)
        p.restore()
    assert f"reference member of window {ids[0]} not read: stored payload is not readable" in caplog.text
    kept = [m for group in p.models["m"].references._members.values() for m in group]
    assert len(kept) == len(ids) - 1  # the other members came back


def test_rolling_include_drifted_changes_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    chunks = [rows(rng, 500) for _ in range(4)] + [rows(rng, 500, mean=1.0, scale=2.0) for _ in range(6)]
    for c in chunks[4:]:
        c["c"] = rng.choice(CATS, 500, p=[0.1, 0.2, 0.7])
        c["y"] = c["y"] + 1.0
    base = {"reference_mode": "rolling", "reference_windows": 2}
    excl = run(make_config(tmp_path / "a", base), chunks)
    incl = run(make_config(tmp_path / "b", {**base, "rolling_include_drifted": True}), chunks)
    assert figures(excl) != figures(incl)
    # excluded: the shifted windows never join, so every one of them stays drifted
    assert verdicts(excl)[4:] == [True] * 6
    # included: after two shifted windows the new level is the reference
    assert verdicts(incl)[4:6] == [True, True] and verdicts(incl)[7:] == [False] * 3


def test_seasonal_reference_is_quiet_on_a_daily_cycle(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    hours = 24 * 3
    chunks, ts = [], []
    for h in range(hours):
        phase = np.sin(2 * np.pi * (h % 24) / 24)
        c = rows(rng, 300, mean=1.5 * phase)
        c["y"] = c["y"] - 1.5 * phase
        c["z"] = c["z"] * (1.0 + 0.8 * phase)
        chunks.append(c)
        ts.append(h * HOUR + np.arange(300, dtype=np.int64) * (HOUR // 300))
    # two extra rows to close the last window (one alone moves no clock: the second vouches)
    chunks.append(rows(rng, 2))
    ts.append(np.array([hours * HOUR] * 2, dtype=np.int64))
    window = {"size": "1h", "lateness": "0s", "min_rows": 50}
    fixed = run(make_config(tmp_path / "f", {}, window=window), chunks, ts=ts)
    seasonal = run(make_config(tmp_path / "s", {"reference_mode": "seasonal", "season": "1d",
                                                "reference_windows": 2}, window=window), chunks, ts=ts)
    assert figures(fixed) != figures(seasonal)
    vf, vs = verdicts(fixed), verdicts(seasonal)
    assert len(vf) == len(vs) == hours
    assert vf[:24] == vs[:24]  # day one: no previous season, the file is the reference
    assert sum(vf[24:]) >= 20 and sum(vs[24:]) <= 3
    labels = [r["reference"] for r in seasonal.query("SELECT reference FROM windows ORDER BY start")]
    assert all(lb.startswith("seasonal:") for lb in labels[24:])


def test_cli_windows_shows_the_calibrated_thresholds(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from monitor.cli.app import app

    cfg = make_config(tmp_path, {}, {"thresholds": "calibrated"})
    run(cfg, stationary(2)).close()
    where = state_cli_args(cfg.daemon.state_dir, tmp_path / "cli")
    out = CliRunner().invoke(app, ["windows", *where, "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)["items"]
    assert len(listed) == 2 and all(w["share_threshold"] in (0.25, 0.5, 0.75, 1.0) for w in listed)
    shown = CliRunner().invoke(app, ["windows", "show", listed[0]["ref"], *where, "--json"])
    assert shown.exit_code == 0, shown.output
    rows = {(r["column"], r["metric"]): r for r in json.loads(shown.output)["item"]["figures"]}
    assert 0.0 < rows[("x", "drift_score")]["threshold"] < 0.2 and rows[("x", "drift_score")]["p_value"] is not None
    table = CliRunner().invoke(app, ["windows", *where], env={"COLUMNS": "100"})
    shares = {w["share_threshold"] for w in listed}
    assert all(f"≥{share:.2f}" in table.output for share in shares), table.output


def test_rolling_members_are_kept_for_at_most_the_caps_worth_of_groups(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """Versions that come and go (a version per two windows here) must not leave their
    member windows in memory and in reference_members forever (on both stores)."""
    cfg = make_config(tmp_path, {"reference_mode": "rolling", "reference_windows": 1,
                                 "limits": {"max_versions": 2}})
    store = store_target.open()
    p = Pipeline(cfg, store)
    rng = np.random.default_rng(3)
    off = 0
    for v in range(6):
        for _ in range(2):
            b = batch(rows(rng, 500), off)
            b.version[:] = f"v{v}"
            p.process({"m": b}, [], {0: off + 500})
            off += 500
            p.flush()
    refs = p.models["m"].references
    assert refs is not None and refs.max_groups == 2
    assert sorted(refs._members) == [("v4", ""), ("v5", "")]
    stored = store.query("SELECT DISTINCT version FROM reference_members ORDER BY version")
    assert [r["version"] for r in stored] == ["v4", "v5"]


@pytest.mark.postgres
def test_a_handover_while_the_store_is_away_does_not_stop_the_pipeline(
    tmp_path: Path, pg_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Partitions taken away while PostgreSQL refuses connections: the reset model cannot
    reload its rolling members. That is logged, not raised (it used to escape the consumer
    loop and stop the daemon); the pipeline goes on and flushes once the store is back."""
    model = {"reference_mode": "rolling", "reference_windows": 3}
    cfg = make_config(tmp_path, model)
    store = pg_target.open(connect_timeout_s=1)
    p = Pipeline(cfg, store)
    p.restore()
    off = 0
    for c in trending(4):
        n = len(c["x"])
        p.process({"m": batch(c, off)}, [], {0: off + n})
        off += n
        p.flush()
    assert store.query("SELECT COUNT(*) AS n FROM reference_members")[0]["n"] >= 1

    with pg_target.refusing_connections(), caplog.at_level("ERROR", logger="driftwarden.pipeline"):
        p.release_partitions(set())
    assert "model m: rolling reference not reloaded after the handover" in caplog.text
    assert not p.models["m"].windows.open and not p.positions
    # the store is back: nothing held up. The pool reconnects with a back-off (seconds under
    # load), so the flush is retried as the daemon retries it
    deadline = time.monotonic() + 30
    while True:
        try:
            p.flush()
            break
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    store.close()


def test_columns_calibrated_thresholds_cannot_hold_are_named_once_per_reference(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.windows.figures import PreparedModel

    rng = np.random.default_rng(11)
    cols = rows(rng, 1500)
    cols["x"] = rng.standard_t(1.5, 1500)  # heavy tail: auto picks wasserstein above 1,000 rows
    cols["c"] = np.array([f"k{int(v)}" for v in rng.geometric(0.2, 1500)], dtype=object)  # rare categories
    (tmp_path / "a").mkdir()
    write_reference(tmp_path / "a" / "ref.csv", cols)
    drift = {"thresholds": "calibrated", "columns": {"c": {"method": "chisquare"}}}
    cfg = make_config(tmp_path / "a", {}, drift)
    store = open_state_store(cfg.daemon.state_dir, synchronous="NORMAL")
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):
        p = Pipeline(cfg, store)
    warned = [r.getMessage() for r in caplog.records if "column '" in r.getMessage()]
    assert len(warned) == 2, warned
    heavy, sparse = sorted(warned, key=lambda w: "'x'" not in w)
    assert heavy.startswith("model m: column 'x' (wasserstein, thresholds = \"calibrated\"): heavy tail, tail index about")
    assert 'method = "ks"' in heavy
    assert sparse.startswith("model m: column 'c' (chisquare, thresholds = \"calibrated\"): sparse tail,")
    assert "windows of 500 rows bring a value the reference lacks" in sparse and '"jensenshannon"' in sparse
    rt = p.models["m"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):  # a reload, same reference and settings
        p.use_prepared("m", PreparedModel.build(cfg.models[0], rt.schema, load_ref(cfg.models[0])))
    assert "column '" not in caplog.text  # once per reference
    (tmp_path / "b").mkdir()
    write_reference(tmp_path / "b" / "ref.csv", rows(rng, 1500))
    plain = make_config(tmp_path / "b", {}, {"thresholds": "calibrated"}).models[0]  # light tails, common categories
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):
        p.use_prepared("m", PreparedModel.build(plain, rt.schema, load_ref(plain)))
    assert "column '" not in caplog.text
    # evidently thresholds: Evidently's, for parity; no calibration to break
    evid = make_config(tmp_path / "a", {}, {"columns": {"c": {"method": "chisquare"}}}).models[0]
    assert PreparedModel.build(evid, rt.schema, load_ref(evid)).limit_warnings() == []
    store.close()


def test_a_chisquare_column_of_distinct_values_warns_and_does_not_stop_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # every reference value seen once (an id-like column under chi-square): the chance of an
    # unseen value in a window is 1; computing it as log1p(-1) raised "math domain error"
    # out of the start-up warning, and the pipeline did not start
    rng = np.random.default_rng(12)
    cols = rows(rng, 1500)
    cols["c"] = np.array([f"id{i}" for i in range(1500)], dtype=object)
    write_reference(tmp_path / "ref.csv", cols)
    cfg = make_config(tmp_path, {}, {"thresholds": "calibrated", "columns": {"c": {"method": "chisquare"}}})
    store = open_state_store(cfg.daemon.state_dir, synchronous="NORMAL")
    with caplog.at_level("WARNING", logger="driftwarden.pipeline"):
        Pipeline(cfg, store)
    warned = [r.getMessage() for r in caplog.records if "column 'c'" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "1500 of 1500 reference values seen once (100 %)" in warned[0]
    assert "about 100 % of windows of 500 rows bring a value the reference lacks" in warned[0]
    store.close()


def test_an_estimate_of_the_advisory_warnings_that_raises_does_not_stop_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the warnings are advice: the math domain error above stopped start-up; any future
    # estimator failure is logged and the pipeline starts without the warning
    import monitor.windows.figures as figures

    def broken(*_a: object, **_k: object) -> tuple[()]:
        raise ValueError("math domain error")

    monkeypatch.setattr(figures, "column_limits", broken)
    rng = np.random.default_rng(12)
    write_reference(tmp_path / "ref.csv", rows(rng, 1500))
    cfg = make_config(tmp_path, {}, {"thresholds": "calibrated"})
    store = open_state_store(cfg.daemon.state_dir, synchronous="NORMAL")
    with caplog.at_level("ERROR", logger="driftwarden.figures"):
        p = Pipeline(cfg, store)
    assert p.models  # started
    assert any("could not be worked out" in r.getMessage() for r in caplog.records)
    store.close()
