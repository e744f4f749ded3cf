"""Read commands stay light: they import neither pandas, evidently, sqlite-utils nor the web stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from storage.records import MetricRow, WindowKey, WindowRecord
from storage.windows import write_window
from tests.monitor.cli.test_read_commands import T
from tests.store_targets import StoreTarget

HEAVY = {"pandas", "evidently", "sqlite_utils", "litestar", "uvicorn", "sklearn", "scipy", "kafka"}
CODE = f"HEAVY = {HEAVY!r}\n" + """
import sys, runpy
sys.argv = ["driftwarden", *sys.argv[1:]]
try:
    runpy.run_module("monitor.cli.app", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & HEAVY))
"""


@pytest.mark.parametrize("command", ["windows", "alerts", "status"])
def test_read_commands_import_nothing_heavy(tmp_path: Path, command: str, store_target: StoreTarget) -> None:
    """On SQLite (``--state-dir``) and on the shared PostgreSQL of a config (``-c``)."""
    store = store_target.open()
    with store.transaction():
        key = WindowKey("churn", "v1", "", "2026-11-23T14:00:00.000Z", "2026-11-23T14:15:00.000Z")
        write_window(store, WindowRecord(key, 100, "ok", T), [MetricRow("", "drift_share", 0.5, 0.5, True)])
    store.close()
    out = subprocess.run([sys.executable, "-c", CODE, command, *store_target.cli_args(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout[-500:]
