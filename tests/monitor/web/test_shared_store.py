"""The HTTP API, ``/metrics``, reports and the on-call CLI read a shared PostgreSQL store the
way they read SQLite: the same stream seeded into each store gives the same answers. The
model has the label join on, so its predictions wait in the join of each store and its
counters and owed windows are among the answers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from storage.records import window_url_id
from tests.monitor.web.http_helpers import AUTH, http
from tests.monitor.web.seed_helpers import Seeded, seeded_daemon
from tests.monitor.web.test_metrics import scrape
from tests.store_targets import SQLITE_STORAGE_TOML

pytestmark = [pytest.mark.evidently]

#: the label join on (predictions only: they wait for labels in the join's tables)
JOIN = "performance = { enabled = true }"
#: series that measure time or the process, not the stored figures
VOLATILE = ("driftwarden_window_compute_seconds", "driftwarden_build_info", "driftwarden_uptime",
            "driftwarden_last_", "driftwarden_storage_", "driftwarden_retention_", "driftwarden_db_size",
            "driftwarden_alert_since_")
API = ("/api/v1/models", "/api/v1/alerts", "/api/v1/models/churn/windows?metrics=1&limit=100")
CLI = (("windows", "--limit", "100"), ("alerts",), ("deliveries",), ("dead-letters", "--by-reason"), ("status",))


def _stable(value: Any) -> Any:
    """``value`` without what differs between two runs by design (times, random ids)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items()
                if not (k.endswith("_at") or k in ("id", "now", "last_error", "schema_version", "partitions", "first", "last"))}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _reads(s: Seeded) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metrics = scrape(s)
    out["/metrics"] = {
        name: sorted((sorted(lab.items()), v) for lab, v in samples)
        for name, samples in metrics.items()
        if name.startswith("driftwarden_") and not name.startswith(VOLATILE)
    }
    for path in API:
        r = http(s.server.port, "GET", path, headers=AUTH)
        assert r.status == 200, (path, r.status, r.body[:300])
        out[path] = _stable(json.loads(r.body.decode().replace(str(s.folder), "<folder>")))
    cfg = str(s.folder / "config.toml")
    for args in CLI:
        res = CliRunner().invoke(app, [*args, "-c", cfg, "--json"])
        assert res.exit_code == 0, (args, res.output)
        out[" ".join(args)] = _stable(json.loads(res.output.replace(str(s.folder), "<folder>")))
    return out


@pytest.fixture(scope="module")
def sqlite_reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp, seeded_daemon(
        tmp_path_factory.mktemp("sqlite-reads"), mp, windows=6, shift_from=3, bad=[b"not json", b"[1]"],
        model_extra=JOIN, storage=SQLITE_STORAGE_TOML,  # SQLite even when the suite runs on PostgreSQL
    ) as s:
        yield _reads(s)


def test_every_read_path_answers_the_same_on_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_target: Any, sqlite_reads: dict[str, Any]
) -> None:
    with seeded_daemon(
        tmp_path / "pg", monkeypatch, windows=6, shift_from=3, bad=[b"not json", b"[1]"],
        storage=pg_target.storage_toml(), model_extra=JOIN,
    ) as s:
        assert s.daemon.store.shared and not (tmp_path / "pg" / "state" / "driftwarden.db").exists()
        got = _reads(s)
        # a report renders from the window's sample kept in the shared store
        drifted = s.daemon.store.query(
            "SELECT window_id FROM metrics WHERE metric = 'drift_share' AND drifted = 1 ORDER BY window_id LIMIT 1"
        )[0]["window_id"]
        url = f"http://127.0.0.1:{s.server.port}/api/v1/models/churn/windows/{window_url_id(drifted)}/report"
        with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=120) as r:
            assert r.status == 200 and b"monthly_charges" in r.read()
    assert got.keys() == sqlite_reads.keys()
    for key in got:
        assert got[key] == sqlite_reads[key], key
    assert got["/metrics"]["driftwarden_dataset_drifted"]  # the comparison is of something
    assert any(w["dataset_drift"] for w in got["windows --limit 100"]["items"])
    joined = got["/metrics"]["driftwarden_label_join_total"]
    assert ([("event", "predictions"), ("model", "churn")], 6 * 300.0) in joined
    assert got["status"]["item"]["label_join"]["churn"]["predictions"] == 6 * 300
