"""Permissions of the state directory: the directory and its subdirectories 0700,
every file in it 0600.

The state holds alert payloads, reference data and raw dead-lettered messages:
only the daemon's user may read it. The daemon sets a umask of 077 at start-up
(``driftwarden run``, ``driftwarden demo``), so what it creates afterwards is
private whatever the caller's umask; :func:`secure_state_dir` creates the
directory and the database file with explicit modes and takes group and other
permissions away from anything already there (a state dir created by an older
version, by hand, or by a tool with umask 022), logging each change. Read-only
commands never call it: they change no mode. A state directory that cannot be
used is a deployment mistake, not a crash: :func:`prepare_state_dir` raises
:class:`StateDirError` saying which folder, why, as which user, and how to fix it
(``driftwarden run`` and ``check`` then exit 2).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

from storage.db import DB_FILENAME

log = logging.getLogger("driftwarden.storage")

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The umask the daemon runs with: nothing it creates is readable by group or others.
DAEMON_UMASK = 0o077
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


class StateDirError(Exception):
    """The state directory cannot be created or written; the message says what to fix."""


def _who() -> str:
    uid = os.getuid()
    try:
        import pwd  # noqa: PLC0415 - POSIX only

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _fix(path: Path) -> str:
    return (
        f"make {path} writable for {_who()}, or set daemon.state_dir"
        " (environment: DRIFTWARDEN_DAEMON__STATE_DIR) to a folder that is"
    )


def prepare_state_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700, parents as needed) and check that files can be written in it.

    An existing folder that we own is narrowed to 0700 (the store holds payloads and
    alert history; the change is logged); one owned by someone else is left alone.
    Raises :class:`StateDirError` naming the folder, the reason and the fix.
    """
    return _prepare(Path(path))[0]


def _prepare(path: Path) -> tuple[Path, bool]:
    """:func:`prepare_state_dir`, and whether the folder's own mode was narrowed."""
    if path.exists() and not path.is_dir():
        # making the file "writable" would not help: it has to become (or give way to) a folder
        raise StateDirError(f"daemon.state_dir: {path} exists and is not a folder; move it away, or set"
                            " daemon.state_dir (environment: DRIFTWARDEN_DAEMON__STATE_DIR) to a folder")
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StateDirError(f"daemon.state_dir: cannot create {path}: {reason}; {_fix(path)}") from None
    narrowed = _restrict(path)
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StateDirError(f"daemon.state_dir: cannot write in {path}: {reason}; {_fix(path)}") from None
    return path, narrowed


def secure_state_dir(state_dir: str | Path, *, database: bool = True) -> list[Path]:
    """Create ``state_dir`` (mode 0700) and its database file (0600; not with
    ``database=False``: a shared PostgreSQL holds the data) if missing, and
    remove group/other permissions from the directory and everything under it
    (symlinks are neither followed nor changed). Returns the paths whose mode was
    changed; each change is logged as a warning. A path whose mode cannot be
    changed (owned by another user) is logged as an error and left as it is."""
    root, narrowed = _prepare(Path(state_dir))
    db = root / DB_FILENAME
    if database and not db.exists():
        # created before SQLite opens it: SQLite gives -wal and -shm the same mode
        os.close(os.open(db, os.O_RDWR | os.O_CREAT, FILE_MODE))
    changed = [root] if narrowed else []
    # the lock file holds no data, and stays readable so any user's process can lock it
    changed += [p for p in _entries(root) if p.name != LOCK_FILENAME and _restrict(p)]
    return changed


def _entries(root: Path) -> list[Path]:
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):  # does not descend into symlinked dirs
        out.extend(Path(folder) / name for name in (*dirs, *files))
    return out


def _restrict(path: Path) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:  # gone meanwhile (e.g. a -shm file)
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _OPEN_BITS:
        return False
    new = mode & ~_OPEN_BITS
    try:
        os.chmod(path, new)
    except OSError as exc:
        if st.st_uid != os.geteuid():
            # a mounted volume's root (Kubernetes' fsGroup: root-owned, group-writable): not
            # ours to change, and what the daemon writes in it is 0600 all the same
            log.warning("state dir: %s (mode %04o) belongs to uid %d, not this process's uid %d, and"
                        " cannot be narrowed (%s); the files the daemon writes in it are 0600",
                        path, mode, st.st_uid, os.geteuid(), exc.strerror or exc)
        else:
            log.error("state dir: cannot restrict %s (mode %04o): %s", path, mode, exc)
        return False
    log.warning(
        "state dir: %s was readable by others (mode %04o): changed to %04o", path, mode, new
    )
    return True


#: the lock file of a state directory: a daemon holds a shared lock on it while it runs, a
#: replay an exclusive one, so neither starts on a folder the other is using
LOCK_FILENAME = ".driftwarden.lock"
#: the lock file's mode: it holds nothing, and any user's process must be able to open
#: it to lock it (the folder itself is 0700)
LOCK_MODE = 0o644
#: the file that marks a folder as a replay's own: a replay rewrites only such folders and
#: a daemon refuses to start on one (its tables would be replaced by the next replay)
REPLAY_MARKER = ".driftwarden-replay"


class StateDirBusy(StateDirError):
    """Another driftwarden process (a daemon or a replay) is using the state directory.
    ``in_use``: who holds it, without the advice (a caller may give its own)."""

    def __init__(self, in_use: str) -> None:
        super().__init__(f"{in_use}; wait for it to end, or give another folder")
        self.in_use = in_use


class StateDirLock:
    """An ``flock`` held on a state directory's lock file until :meth:`release` (or the
    process ends: the kernel drops it, so a crash never leaves a stale lock)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateDirLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def lock_state_dir(state_dir: str | Path, *, exclusive: bool) -> StateDirLock:
    """Lock ``state_dir`` (which must exist): shared (a daemon) or exclusive (a replay).

    Never waits: raises :class:`StateDirBusy` when a conflicting lock is held (a replay
    while a daemon or another replay runs there, a daemon while a replay runs there),
    :class:`StateDirError` when the lock file cannot be created. The lock file is
    :data:`LOCK_MODE`, so one another user created can still be opened to lock it.
    """
    import fcntl  # noqa: PLC0415 - POSIX only

    path = Path(state_dir) / LOCK_FILENAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, LOCK_MODE)  # whatever the umask
    except PermissionError:
        # one another user made (a `sudo driftwarden ...`): flock needs no write access.
        # Never replaced: a process holding a lock on it would no longer exclude anyone
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StateDirError(f"{path.parent}: cannot open its lock file {path.name} (another user's, not"
                                f" readable?): {exc.strerror or exc}; remove it while nothing runs there") from None
    except OSError as exc:
        raise StateDirError(f"{path.parent}: cannot create its lock file: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        holder = "a replay" if (path.parent / REPLAY_MARKER).exists() else "a running daemon"
        raise StateDirBusy(f"{path.parent} is in use by {holder} (it holds {path})") from None
    return StateDirLock(path, fd)
