"""The demo's closing hints (``inspect: … windows``) name a command the user's shell can run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.demo.run import cli_command


def test_without_driftwarden_on_the_path_the_hint_runs_the_one_beside_this_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # after the README's install command the venv is not activated: a bare `driftwarden`
    # was "command not found"
    monkeypatch.setenv("PATH", str(tmp_path))
    cmd = cli_command()
    assert cmd != "driftwarden"
    out = subprocess.run(f"{cmd} --help", shell=True, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"})
    assert out.returncode == 0, out.stderr[-500:]
    assert "windows" in out.stdout


def test_with_driftwarden_on_the_path_the_hint_is_the_bare_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "driftwarden"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}")
    assert cli_command() == "driftwarden"
