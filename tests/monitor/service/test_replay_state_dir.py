"""The replay's folder: nothing in it changes until the file and options are known to
work; it is held (locked) for the whole run, against a daemon and another replay; an
interrupted or failed replay keeps nothing and leaves the earlier tables; its files are
private (0700 / 0600) like a daemon's."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from monitor.config import Config, load_config
from monitor.service.daemon import Daemon
from monitor.service.replay import PARTIAL_DB, ReplayError, ReplayInterrupted, run_replay
from monitor.service.replay_source import ReplaySourceError
from storage.db import Store
from storage.state_dir import REPLAY_MARKER, StateDirError, lock_state_dir, secure_state_dir
from tests.monitor.daemon_helpers import stream, write_config


def _setup(tmp_path: Path) -> tuple[Config, Path]:
    cfg = load_config(write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9))
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(stream(windows=3, per_window=100, shift_from=9, seed=3)) + b"\n")
    return cfg, data


def _windows(folder: Path) -> int:
    store = Store(folder / "driftwarden.db", readonly=True)
    try:
        return int(store.query("SELECT COUNT(*) AS n FROM windows")[0]["n"])
    finally:
        store.close()


def test_a_wrong_option_leaves_the_earlier_replay_as_it_was(tmp_path: Path) -> None:
    """A typo in --time-column was found only after the earlier tables were deleted."""
    cfg, data = _setup(tmp_path)
    out = tmp_path / "out"
    first = run_replay(cfg, data, out)
    assert first.windows >= 3 and _windows(out) == first.windows
    with pytest.raises(ReplaySourceError, match='--time-column: no "evnet_time" field'):
        run_replay(cfg, data, out, time_column="evnet_time")
    assert _windows(out) == first.windows


def test_an_interrupted_replay_keeps_nothing_and_says_so(tmp_path: Path) -> None:
    """Ctrl-C (and SIGTERM, which the CLI turns into the same) half-way: the partial
    tables are deleted and the folder still holds the earlier, complete replay (before,
    the partial tables stayed and looked complete)."""
    cfg, data = _setup(tmp_path)
    out = tmp_path / "out"
    first = run_replay(cfg, data, out)

    def interrupt(_rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(ReplayInterrupted, match="interrupted after 50 rows: nothing of it was kept"):
        run_replay(cfg, data, out, chunk_rows=50, progress=interrupt)
    assert _windows(out) == first.windows
    assert not [p.name for p in out.iterdir() if p.name.startswith(PARTIAL_DB)]


def _opened_by(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open now (Linux: its /proc/PID/fd links)."""
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:  # it ended, or a descriptor closed while listed
        return False
    return str(path) in links


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="tells the counting pass by /proc/PID/fd (Linux)")
def test_ctrl_c_while_the_rows_are_counted_says_so_and_leaves_the_folders_as_they_were(tmp_path: Path) -> None:
    """SIGINT during the progress bar's counting pass over a large file (before any row is
    replayed): exit 130 with one line saying nothing was replayed, no traceback; an earlier
    replay's folder is left byte for byte as it was and a new folder is not made."""
    cfg, data = _setup(tmp_path)
    out = tmp_path / "out"
    first = run_replay(cfg, data, out)
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in out.iterdir())
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as fh:
        fh.truncate(64 << 30)  # sparse, no disk used: counting its lines takes minutes
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    fresh = tmp_path / "fresh"
    try:
        for folder in (out, fresh):
            _interrupt_the_count(tmp_path / "conf" / "config.toml", huge, folder, env)
    finally:
        huge.unlink()  # 64 GiB to whatever walks the folder
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in out.iterdir()) == before
    assert _windows(out) == first.windows
    assert not fresh.exists()


def _interrupt_the_count(cfg: Path, data: Path, folder: Path, env: dict[str, str]) -> None:
    """``driftwarden replay`` of ``data`` into ``folder``, SIGINT once it opened the file
    (its counting pass): the exit status and what it said."""
    import signal
    import subprocess
    import sys

    from tests.monitor.daemon_helpers import wait_for

    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli.app", "replay", "-c", str(cfg), str(data), "--state-dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        # the counting pass is the first to open the file
        assert wait_for(lambda: _opened_by(proc.pid, data) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stdout == ""
    assert stderr == f"driftwarden: replay interrupted before it began: nothing was replayed into {folder}\n"


@pytest.mark.sqlite_only("a daemon's SQLite file in its folder, refused to a replay")
def test_a_replay_and_a_daemon_or_another_replay_exclude_each_other(tmp_path: Path) -> None:
    cfg, data = _setup(tmp_path)
    out = tmp_path / "out"
    first = run_replay(cfg, data, out)
    with lock_state_dir(out, exclusive=True):  # another replay holds the folder
        with pytest.raises(ReplayError, match="is in use by a replay"):
            run_replay(cfg, data, out)
    assert _windows(out) == first.windows

    # a daemon may not start on a replay's folder: the next replay would replace its tables
    on_replay = cfg.model_copy(update={"daemon": cfg.daemon.model_copy(update={"state_dir": out})})
    with pytest.raises(StateDirError, match="is a `driftwarden replay` folder"):
        Daemon(on_replay, http=False)

    # a running daemon's folder: refused for its files, before a lock file is made there
    daemon = Daemon(cfg, http=False)
    try:
        assert daemon.config.daemon.state_dir.is_dir()
        with pytest.raises(ReplayError, match="holds files a replay did not create"):
            run_replay(cfg, data, daemon.config.daemon.state_dir)
        with pytest.raises(StateDirError, match="is in use by a running daemon"):
            lock_state_dir(daemon.config.daemon.state_dir, exclusive=True)
    finally:  # as its shutdown ends (never run: no consumer to close)
        daemon.close()
    with pytest.raises(ReplayError, match="holds files a replay did not create"):  # stopped: still its own
        run_replay(cfg, data, cfg.daemon.state_dir)


def test_replay_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    cfg, data = _setup(tmp_path)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        run_replay(cfg, data, out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {REPLAY_MARKER: 0o600, ".driftwarden.lock": 0o644, "driftwarden.db": 0o600}


@pytest.mark.sqlite_only("a daemon's SQLite file in its folder, refused to a replay")
def test_a_refused_replay_leaves_no_lock_file_and_another_users_is_replaced(tmp_path: Path) -> None:
    """`sudo driftwarden replay --state-dir <the daemon's folder>` was refused but left a
    root-owned 0600 lock file there: the daemon's user could not open it and `run` exited 2
    at every start."""
    import shutil
    import subprocess
    import sys
    import tempfile

    cfg, data = _setup(tmp_path)
    Store.in_state_dir(cfg.daemon.state_dir).close()
    with pytest.raises(ReplayError, match="holds files a replay did not create"):
        run_replay(cfg, data, cfg.daemon.state_dir)
    assert not (cfg.daemon.state_dir / ".driftwarden.lock").exists()
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return
    # a lock file root made (`sudo driftwarden run`) stays readable: the folder's owner can
    # lock it, and is kept out while root holds it (it was replaced, which let both run)
    outer = Path(tempfile.mkdtemp(prefix="dw-lock-"))
    try:
        os.chmod(outer, 0o755)
        folder = outer / "state"
        folder.mkdir(mode=0o700)
        old = os.umask(0o077)
        try:
            held = lock_state_dir(folder, exclusive=True)  # root's, made under the daemon's umask
        finally:
            os.umask(old)
        secure_state_dir(folder)  # root's start narrows the folder's files, never the lock file
        os.chown(folder, 4321, 4321)
        assert stat.S_IMODE((folder / ".driftwarden.lock").stat().st_mode) == 0o644
        code = ("import sys; from storage.state_dir import lock_state_dir, StateDirBusy\n"
                "try:\n    lock_state_dir(sys.argv[1], exclusive=False); print('locked')\n"
                "except StateDirBusy: print('busy')")
        def as_owner() -> str:
            res = subprocess.run(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", "--inh-caps=-all",
                                  "--bounding-set=-all", sys.executable, "-c", code, str(folder)], capture_output=True,
                                 text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            assert res.returncode == 0, res.stderr
            return res.stdout.strip()
        assert as_owner() == "busy"
        held.release()
        assert as_owner() == "locked"
        assert (folder / ".driftwarden.lock").stat().st_uid == 0  # the same file, not a new one
    finally:
        shutil.rmtree(outer)


def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    """`driftwarden run` by hand beside the service took half the partitions and overwrote
    the windows the service computed with its own half, without a word."""
    from storage.state_dir import StateDirBusy
    from tests.store_targets import PG_MODE

    cfg, _ = _setup(tmp_path)
    if PG_MODE:
        pytest.skip("instances of a shared PostgreSQL store may share a folder")
    first = Daemon(cfg, http=False)
    try:
        with pytest.raises(StateDirBusy, match="is in use by a running daemon"):
            Daemon(cfg, http=False)
    finally:
        first.close()
    second = Daemon(cfg, http=False)  # once the first is gone
    second.close()
