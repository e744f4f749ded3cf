"""``driftwarden report`` on a real state dir: the HTML file, the ways to name a window, and
every refusal with its exit status."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.config import load_config
from monitor.service.daemon import Daemon
from storage.records import window_url_id
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.web.seed_helpers import feed
from tests.store_targets import StoreTarget

pytestmark = [pytest.mark.evidently]


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, module_store_target: StoreTarget
) -> Iterator[tuple[Path, tuple[str, str], list[str]]]:
    """(config, the store as the command line names it, window ids newest first) after a
    drifting stream, 6 samples kept; in a state dir (``--state-dir``) or the shared
    PostgreSQL of the config (``-c``)."""
    folder = tmp_path_factory.mktemp("report-cli")
    cfg_path = write_config(folder, bootstrap="127.0.0.1:9", topic="p", http_port=1,
                            extra="[reports]\nsample_rows = 400\nsample_windows = 6\n"
                            + module_store_target.storage_toml())
    daemon = Daemon(load_config(cfg_path), http=False)
    try:
        feed(daemon, stream(4, 300, 2), close_at_ms=int(START.timestamp() * 1000) + 5 * 60_000)
        ids = [r["id"] for r in daemon.store.query('SELECT id FROM windows ORDER BY "end" DESC, id DESC')]
    finally:
        daemon.close()
    shared = module_store_target.kind == "postgres"
    yield cfg_path, ("-c", str(cfg_path)) if shared else ("--state-dir", str(folder / "state")), ids


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return r.exit_code, r.stdout, r.stderr


def test_a_report_by_window_id_from_the_store(state, tmp_path: Path) -> None:
    _, where, ids = state
    wid = next(i for i in ids if i.split("|")[2] == "")  # the newest all-rows window
    out = tmp_path / "r.html"
    code, stdout, stderr = run("report", *where, "--window", wid, "--out", str(out))
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out} (") and f"window {wid}, a sample of 300 of its 300 rows against" in stdout
    assert "the reference this window was judged against (reference.csv)" in stdout
    page = out.read_text()
    assert f"window id: <code>{wid}</code>" in page
    for col in ("age", "tenure_days", "monthly_charges", "plan", "region", "prediction"):
        assert f"<td>{col}</td>" in page and (f'"{col}"' in page or f"Drift in column '{col}'" in page)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_report_by_url_id_with_the_config_and_model(state, tmp_path: Path) -> None:
    cfg, _, ids = state
    out = tmp_path / "seg.html"
    seg = next(i for i in ids if i.split("|")[2] == "region=eu")
    code, stdout, stderr = run("report", "-c", str(cfg), "--model", "churn", "--window", window_url_id(seg),
                               "--out", str(out))
    assert code == 0, stderr
    assert "segment</b> region=eu" in out.read_text()


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--window", "not-an-id"], 2, "driftwarden: --window: no window 'not-an-id': give its ref (first column of"
     " `driftwarden windows`), its id (model|version|segment|start|end) or its URL-safe id"),
    # a ref-shaped name that matches no window was answered "expected a window id …"
    (["--window", "ffffffff"], 2, "driftwarden: --window: no window 'ffffffff': give its ref"),
    (["--window", "churn|v1||a|b", "--model", "fraud"], 2,
     "driftwarden: window 'churn|v1||a|b' belongs to model 'churn', not 'fraud'"),
    (["--window", "churn|v1||2026-01-01T00:00:00.000Z|x"], 1,
     "driftwarden: no report for window 'churn|v1||2026-01-01T00:00:00.000Z|x': no such window"),
])
@pytest.mark.parametrize("module_store_target", ["sqlite"], indirect=True)  # refused before or at one lookup by id
def test_refusals(state, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    _, where, _ = state
    got, _, stderr = run("report", *where, "--out", str(tmp_path / "x.html"), *args)
    assert got == code and stderr.startswith(message), stderr
    assert not (tmp_path / "x.html").exists()


def test_an_old_window_says_its_sample_is_gone(state, tmp_path: Path) -> None:
    _, where, ids = state
    code, _, stderr = run("report", *where, "--window", ids[-1], "--out", str(tmp_path / "o.html"))
    assert code == 1
    assert "the sample of this window's rows is gone: reports can be made for the newest [reports] sample_windows" in stderr


@pytest.mark.sqlite_only("the SQLite file's bytes and mode")
@pytest.mark.parametrize("module_store_target", ["sqlite"], indirect=True)  # the file's bytes and mode
def test_the_store_is_opened_read_only(state, tmp_path: Path) -> None:
    _, (_, state_dir), ids = state
    db = Path(state_dir) / "driftwarden.db"
    os.chmod(db, 0o644)
    before = (db.read_bytes(), stat.S_IMODE(db.stat().st_mode))
    code, _, stderr = run("report", "--state-dir", str(state_dir), "--window", ids[0], "--out", str(tmp_path / "a.html"))
    assert code == 0, stderr
    assert (db.read_bytes(), stat.S_IMODE(db.stat().st_mode)) == before


@pytest.mark.parametrize("module_store_target", ["sqlite"], indirect=True)  # refused before the lookup
def test_out_naming_a_folder_is_refused_before_rendering(state, tmp_path: Path) -> None:
    # it used to render the report (seconds) and then fail with "cannot write DIR: Is a directory", exit 1
    _, where, ids = state
    got, _, stderr = run("report", *where, "--window", ids[0], "--out", str(tmp_path))
    assert got == 2
    assert stderr.strip() == (
        f"driftwarden: --out: {tmp_path} is a folder; give the report's file name, e.g. {tmp_path / 'report.html'}"
    )
    assert list(tmp_path.iterdir()) == []
