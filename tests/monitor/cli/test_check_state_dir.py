"""``check`` prepares the state dir as ``run`` does, and says what it changed."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from monitor.cli.check import CheckFailed, check_state_dir


def _cfg(path: Path) -> Any:
    return SimpleNamespace(daemon=SimpleNamespace(state_dir=path))


def test_a_too_open_state_dir_is_narrowed_and_check_says_so(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    assert check_state_dir(_cfg(d)) == f"state dir {d} writable (mode 0755 narrowed to 0700, as the daemon does at start)"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert check_state_dir(_cfg(d)) == f"state dir {d} writable"
    fresh = tmp_path / "new" / "state"
    assert check_state_dir(_cfg(fresh)) == f"state dir {fresh} writable"
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_a_file_in_the_way_fails_the_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckFailed, match="exists and is not a folder"):
        check_state_dir(_cfg(blocker))
