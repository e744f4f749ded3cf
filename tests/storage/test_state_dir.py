"""The state directory is private: 0700 directories, 0600 files, fixed (and logged) at start."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from storage.db import Store
from storage.state_dir import secure_state_dir

pytestmark = pytest.mark.sqlite_only("the modes of the state dir's files, the SQLite database's among them")

def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_new_state_dir_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / "a" / "state"
        assert secure_state_dir(state) == []
        store = Store.in_state_dir(state)
        with store.transaction():
            store.execute("INSERT INTO dead_letters (topic, partition, \"offset\", reason, payload, received_at)"
                          " VALUES ('t', 0, 1, 'r', x'00', '2026-01-01T00:00:00.000Z')")
        names = sorted(p.name for p in state.iterdir())
        assert names == ["driftwarden.db", "driftwarden.db-shm", "driftwarden.db-wal"]
        assert mode(state) == 0o700
        # SQLite gives -wal and -shm the mode of the database file, created 0600 first
        assert {p.name: mode(p) for p in state.iterdir()} == {n: 0o600 for n in names}
        store.close()
    finally:
        os.umask(old)


def test_existing_open_state_dir_is_restricted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    refs = state / "references" / "churn"
    refs.mkdir(parents=True)
    (refs / "v2.csv").write_text("a\n1\n")
    (state / "driftwarden.db").write_bytes(b"")
    (state / "private.txt").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (state / "link.txt").symlink_to(outside)
    for p, m in [(state, 0o755), (state / "references", 0o775), (refs, 0o777), (refs / "v2.csv", 0o644),
                 (state / "driftwarden.db", 0o666), (state / "private.txt", 0o600), (outside, 0o644)]:
        os.chmod(p, m)
    with caplog.at_level(logging.WARNING, logger="driftwarden.storage"):
        changed = secure_state_dir(state)
    assert sorted(changed) == sorted([state, state / "references", refs, refs / "v2.csv", state / "driftwarden.db"])
    assert mode(state) == mode(state / "references") == mode(refs) == 0o700
    assert mode(refs / "v2.csv") == mode(state / "driftwarden.db") == mode(state / "private.txt") == 0o600
    assert mode(outside) == 0o644  # a symlink is not followed out of the state dir
    assert f"state dir: {state} was readable by others (mode 0755): changed to 0700" in caplog.messages
    assert len(caplog.messages) == 5
    assert secure_state_dir(state) == []  # nothing left to fix
