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


def test_a_volume_root_owned_by_another_user_is_a_warning_not_an_error(tmp_path: Path) -> None:
    """Kubernetes mounts a volume with fsGroup as root-owned and group-writable: the daemon
    cannot narrow it, which logged an ERROR at every start although nothing was wrong."""
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as the daemon's user on a root-owned folder")
    import tempfile

    outer = Path(tempfile.mkdtemp(prefix="dw-volume-"))  # pytest's own folders are 0700
    volume = outer / "volume"
    volume.mkdir()
    os.chmod(outer, 0o755)
    os.chmod(volume, 0o2777)  # root-owned; the daemon's uid may write in it
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(levelname)s %(message)s');"
            "from storage.state_dir import secure_state_dir; secure_state_dir(sys.argv[1])")
    res = subprocess.run(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", "--inh-caps=-all",
                          "--bounding-set=-all", sys.executable, "-c", code, str(volume)],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 0, res.stderr
    assert "ERROR" not in res.stdout, res.stdout
    assert f"WARNING state dir: {volume} (mode 2777) belongs to uid 0, not this process's uid 4321" in res.stdout
    assert mode(volume / "driftwarden.db") == 0o600
    shutil.rmtree(outer)


def test_a_file_in_the_state_dirs_place_is_not_told_to_be_made_writable(tmp_path: Path) -> None:
    # it said "... exists and is not a folder; make F writable for user …", which cannot help
    from storage.state_dir import StateDirError, prepare_state_dir

    blocker = tmp_path / "state"
    blocker.write_text("")
    with pytest.raises(StateDirError) as caught:
        prepare_state_dir(blocker)
    assert str(caught.value) == (
        f"daemon.state_dir: {blocker} exists and is not a folder; move it away, or set daemon.state_dir"
        " (environment: DRIFTWARDEN_DAEMON__STATE_DIR) to a folder"
    )
