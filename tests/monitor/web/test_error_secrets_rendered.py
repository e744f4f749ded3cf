"""What the dashboard (open to anyone without ``daemon.protect_reads``) and the command
line show of a failed delivery: the status and the receiver's page, never the token in the
receiver's URL (path, query, ``user:password@``) that the page echoed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from storage import alerts as db
from tests.alerts.echo import EchoReceiver
from tests.monitor.cli.test_oncall import cli
from tests.monitor.web.http_helpers import http
from tests.monitor.web.seed_helpers import seeded_daemon
from tests.store_targets import state_cli_args

PATH_TOKEN, QUERY_TOKEN, PASSWORD = "Zr8Kp2Wq6Ns4Lx7Vb3Jt", "Hq2Wd9Lk4Xs7Rv1N", "r3ce1ver-pa55"
SECRETS = (PATH_TOKEN, QUERY_TOKEN, PASSWORD, base64.b64encode(f"ops:{PASSWORD}".encode()).decode())


def test_a_failed_delivery_shows_its_status_but_no_receiver_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with EchoReceiver(404) as rx:
        hook = rx.base.replace("http://", f"http://ops:{PASSWORD}@") + f"/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}"
        with seeded_daemon(tmp_path / "state", monkeypatch, windows=6, hook_url=hook) as s:
            [d, *_] = db.list_deliveries(s.daemon.store, notifier="hook")
            page = http(s.server.port, "GET", "/").body.decode()
            state_dir = Path(s.daemon.config.daemon.state_dir)
            assert rx.paths and all(PATH_TOKEN in p for p in rx.paths)  # the receiver's page quoted them
    assert d.status == "dead" and d.last_error == "HTTP 404: Cannot POST /… (authorization: Basic ***)"
    assert "HTTP 404: Cannot POST /…" in page
    res = cli("deliveries", *state_cli_args(state_dir, tmp_path / "cli"), "--notifier", "hook",
              columns=200)
    shown = res.stdout
    assert "HTTP 404" in shown, (res.returncode, res.stdout, res.stderr)
    for secret in SECRETS:
        assert secret not in page and secret not in shown and secret not in (d.last_error or "")
