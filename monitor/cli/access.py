"""Opening the store from the command line, and the errors that say what to fix.

Read commands open ``driftwarden.db`` read-only (SQLite ``mode=ro``): they never create,
migrate or lock it for writing, so they are safe next to a running daemon and on a copy
made for a post-mortem. A database of another schema version is refused with the fix
(an older one: let the new daemon, or ``driftwarden migrate``, upgrade it; a newer one:
use the newer command line). Silences are the one thing the command line writes; it
writes without migrating either.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.config import ConfigError, parse_duration


class CliError(Exception):
    """A problem the user can fix; ``str`` says what and how, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def state_dir_of(config: Path | None, state_dir: Path | None) -> Path:
    """The state dir from ``--state-dir``, else from the config (with its env overrides)."""
    if state_dir is not None:
        return Path(state_dir)
    if config is None:
        raise CliError("give --config FILE (or DRIFTWARDEN_CONFIG) or --state-dir DIR", 2)
    return Path(config_of(config).daemon.state_dir)


def config_of(config: Path | None) -> Any | None:
    """The loaded config when ``-c`` was given, else None; a bad config is a :class:`CliError`.

    Only the secrets that open the store are resolved (the PostgreSQL password): a
    command that reads the store needs neither the notifiers' nor the API's secrets,
    which ``run`` and ``check`` still require."""
    if config is None:
        return None
    from monitor.config import STORE_SECRETS, load_config  # noqa: PLC0415

    try:
        return load_config(config, secrets=STORE_SECRETS)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


def _not_yours(folder: Path) -> str:
    """Why this user may not enter ``folder``, and the fix: the state dir is 0700 and
    belongs to the daemon's user."""
    import os  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    def name(uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"uid {uid}"

    try:
        uid = folder.stat().st_uid
    except OSError:
        return f"this command runs as {name(os.geteuid())}; run it as the daemon's user"
    owner = name(uid)
    sudo = f"'#{uid}'" if owner.startswith("uid ") else owner
    return (f"it belongs to {owner} and this command runs as {name(os.geteuid())}; run it as {owner}"
            f" (e.g. sudo -u {sudo} driftwarden ...)")


def open_store(config: Path | None, state_dir: Path | None, *, write: bool = False) -> Any:
    """The store of the state dir, or the shared PostgreSQL of the config's ``[storage] url``
    (unless ``--state-dir`` is given); read-only unless ``write``; never migrated."""
    from storage.db import DB_FILENAME, StorageError, Store  # noqa: PLC0415

    if state_dir is None and config is not None:
        cfg = config_of(config)
        if cfg is not None and cfg.storage.url is not None:
            return _shared_store(cfg, write=write)
    folder = state_dir_of(config, state_dir)
    path = folder / DB_FILENAME
    try:
        exists = path.is_file()
    except PermissionError:
        raise CliError(f"cannot enter {folder}: {_not_yours(folder)}") from None
    if not exists:
        where = "--state-dir" if state_dir is not None else "daemon.state_dir"
        if folder.is_file():  # the database file itself, most likely: not "no database at F/driftwarden.db"
            hint = f" ({folder.parent})" if folder.name == DB_FILENAME else ""
            raise CliError(f"{where} {folder} is a file, not a folder: give the folder that holds"
                           f" driftwarden.db{hint}")
        raise CliError(
            f"no database at {path}: the daemon has not run with this state dir yet, or {where}"
            " points elsewhere (give the folder that holds driftwarden.db)"
            + (_shared_store_hint(config) if state_dir is not None else "")
        )
    try:
        store = Store(path, readonly=not write, migrate=False)
        version = store.schema_version()
    except StorageError as exc:
        raise CliError(f"{exc}; check that {path} is a driftwarden database readable by this user") from None
    except Exception as exc:  # noqa: BLE001 - sqlite3 errors from a file that is not a database
        raise CliError(f"cannot read {path}: {exc}; check that it is a driftwarden database") from None
    return _checked_version(store, str(path), version, backup="the state dir first")


def _shared_store_hint(config: Path | None) -> str:
    """When ``--state-dir`` (which wins by design) was given beside a config naming a
    shared PostgreSQL store: how to read that store instead ("" otherwise)."""
    try:
        cfg = config_of(config)
    except CliError:  # the config is not needed here: no hint rather than its errors
        return ""
    if cfg is None or cfg.storage.url is None:
        return ""
    return f"; {config} names a shared PostgreSQL store ([storage] url): leave out --state-dir to read it"


def _shared_store(cfg: Any, *, write: bool) -> Any:
    """The shared PostgreSQL store of ``cfg`` (its password from ``password_env``/``_file``)."""
    from monitor.service.store import open_store as open_configured  # noqa: PLC0415
    from storage.db import StorageError  # noqa: PLC0415

    where = "the PostgreSQL store of [storage] url"
    for warning in cfg.warnings:  # the password file every user can read
        print(f"driftwarden: warning: {warning}", file=sys.stderr)
    try:
        store = open_configured(cfg, readonly=not write, application_name="driftwarden cli", migrate=False)
        version = store.schema_version()
    except StorageError as exc:
        raise CliError(f"{exc}; check [storage] url and the password") from None
    return _checked_version(store, where, version, backup="the database first, e.g. with pg_dump")


def _checked_version(store: Any, path: str, version: int, *, backup: str) -> Any:
    """``store`` (at ``path``, its schema ``version``) when the schema is this driftwarden's;
    else closed and a :class:`CliError` (an older one: migrate after backing up ``backup``)."""
    from storage.schema import LATEST_VERSION  # noqa: PLC0415

    if version < LATEST_VERSION:
        store.close()
        raise CliError(
            f"{path} has schema version {version}, this driftwarden expects {LATEST_VERSION}: start the upgraded"
            f" daemon once or run `driftwarden migrate` (back up {backup})"
        )
    if version > LATEST_VERSION:
        store.close()
        raise CliError(
            f"{path} has schema version {version}, newer than this driftwarden knows ({LATEST_VERSION}):"
            " use the driftwarden the daemon runs"
        )
    return store


def parse_since(text: str | None, now: datetime | None = None) -> str | None:
    """``--since``: a duration back from now (``2h``, ``30m``, ``7d``) or a time
    (``2026-11-23``, ``2026-11-23T14:00``, with ``Z`` or an offset; no offset is UTC);
    returned in the store's ISO format."""
    if text is None:
        return None
    from storage.records import iso  # noqa: PLC0415

    now = now or datetime.now(UTC)
    try:
        return iso(now - parse_duration(text))
    except ValueError as exc:  # PydanticCustomError is one
        if "at most" in str(exc):  # a well-formed duration, too long: say so
            raise CliError(f"--since: {exc}", 2) from None
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f'--since: expected a duration like "2h" or a time like 2026-11-23T14:00Z, got "{text}"', 2
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return iso(ts)


def check_choice(option: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise CliError(f'{option}: expected one of {", ".join(choices)}, got "{value}"', 2)
    return value
