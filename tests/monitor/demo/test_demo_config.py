"""The config ``driftwarden demo`` writes starts a daemon without config warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.demo.data import write_reference_csv
from monitor.demo.run import SECRET, write_demo_config
from monitor.service.daemon import Daemon


def _warnings_at_start(cfg_path: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``config_warning`` keys the daemon logs as it starts (and stops at once) on ``cfg_path``."""
    caplog.set_level(logging.WARNING)
    daemon = Daemon(load_config(cfg_path), http=False)
    daemon.stop()  # run() starts, finds the stop asked for, drains and stops at once
    assert daemon.run() == 0
    return [r.key for r in caplog.records if getattr(r, "event", None) == "config_warning"]  # type: ignore[attr-defined]


def test_the_demo_config_sets_its_own_public_url_so_start_up_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the demo printed "daemon.public_url is not set: links in notifications … work on this
    # machine only", which a new user reads as a mistake of theirs; the demo is local by design
    monkeypatch.setenv("DRIFTWARDEN_DEMO_SLACK_TOKEN", "xoxb-demo-token")
    monkeypatch.setenv("DRIFTWARDEN_DEMO_WEBHOOK_SECRET", SECRET)
    write_reference_csv(str(tmp_path / "reference.csv"), label=True)
    path = write_demo_config(tmp_path, http_port=9, bootstrap="127.0.0.1:9",
                             slack_url="http://127.0.0.1:9/api/", webhook_url="http://127.0.0.1:9/hooks")
    assert load_config(path).daemon.base_url == "http://127.0.0.1:9"
    assert _warnings_at_start(path, caplog) == []

    # the same config without it still warns: only the demo's own config is quiet
    caplog.clear()
    bare = tmp_path / "bare.toml"
    bare.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if not line.startswith("public_url")))
    assert _warnings_at_start(bare, caplog) == ["daemon.public_url"]
