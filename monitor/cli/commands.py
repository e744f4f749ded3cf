"""The on-call commands' options and wiring: windows (and ``windows show``), alerts,
dead-letters, deliveries, silence add|list|expire, status, migrate. What they show is in
:mod:`monitor.cli.oncall`; how the store is opened, in :mod:`monitor.cli.access`.

Every command takes ``-c FILE`` (or ``DRIFTWARDEN_CONFIG``) or ``--state-dir DIR``; all but
``silence add|expire`` and ``migrate`` open the database read-only and never migrate it.
Errors say what to fix and exit 1 (2 for a bad option or config), never with a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.access import CliError, check_choice, config_of, open_store, parse_since

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", envvar="DRIFTWARDEN_CONFIG", help="The TOML config file.")
]
StateOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="Read this state directory instead of the config's.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="A versioned JSON document instead of a table.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Only this model.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help='Only since then: a duration back ("2h", "7d") or a time (2026-11-23T14:00Z).')
]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=1_000_000_000, help="At most this many rows.")]


def _echo(text: str) -> None:
    typer.echo(text)


@contextmanager
def _store(config: Path | None, state_dir: Path | None, *, write: bool = False) -> Iterator[Any]:
    """The store for a command; a :class:`CliError` anywhere inside exits with its message."""
    try:
        store = open_store(config, state_dir, write=write)
        try:
            yield store
        finally:
            store.close()
    except CliError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(exc.code) from None


def _options(fn: Callable[[], Any]) -> Any:
    """Run an option parser; a :class:`CliError` exits with its message."""
    try:
        return fn()
    except CliError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(exc.code) from None


# --------------------------------------------------------------------------- windows

windows_app = typer.Typer(help="Stored windows with their drift verdicts; `windows show REF` for one window's figures.")


@windows_app.callback(invoke_without_command=True)
def windows(
    ctx: typer.Context,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    model: ModelOpt = None,
    segment: Annotated[str | None, typer.Option(help='Only this segment, e.g. "region=eu" ("" = all rows).')] = None,
    since: SinceOpt = None,
    state: Annotated[str | None, typer.Option(help="ok | insufficient | error | drifted | stable")] = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """Stored windows, newest first: range, rows, drift verdict and drifted columns; with
    labels, the label coverage and the headline performance figure with its interval."""
    if ctx.invoked_subcommand is not None:
        # `windows --state-dir D show REF`: where to read (and --json) carry over to `show`;
        # the listing's filters do not apply to one window, so they are refused, not ignored
        given = [name for name, value in (("--model", model), ("--segment", segment), ("--since", since),
                                          ("--state", state)) if value is not None]
        source = ctx.get_parameter_source("limit")
        if source is not None and source.name != "DEFAULT":
            given.append("--limit")  # it has a default: given or not is the parser's to say
        if given:
            typer.echo(f"driftwarden: {', '.join(given)}: filter(s) of the `windows` listing, not of"
                       f" `windows {ctx.invoked_subcommand}` (one window); leave them out", err=True)
            raise typer.Exit(2)
        ctx.obj = {"config": config, "state_dir": state_dir, "as_json": as_json}
        return
    from monitor.cli.oncall import windows_list  # noqa: PLC0415

    since_iso = _options(lambda: parse_since(since))
    _options(lambda: check_choice("--state", state, ("ok", "insufficient", "error", "drifted", "stable")))
    with _store(config, state_dir) as store:
        windows_list(store, model=model, segment=segment, since=since_iso, state=state, limit=limit,
                     as_json=as_json, echo=_echo)


@windows_app.command("show")
def windows_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The window's ref (first column of `windows`) or its full id.")],
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every figure of one window: per column and metric, its value, test, threshold, p-value, verdict."""
    from monitor.cli.oncall import window_show  # noqa: PLC0415

    outer = ctx.obj if isinstance(ctx.obj, dict) else {}  # given before `show`
    # each option on its own: one given after `show` must not drop another given before it
    config = config if config is not None else outer.get("config")
    state_dir = state_dir if state_dir is not None else outer.get("state_dir")
    as_json = as_json or bool(outer.get("as_json"))

    with _store(config, state_dir) as store:
        window_show(store, ref, as_json=as_json, echo=_echo)


# --------------------------------------------------------------------------- the rest


def alerts(
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    model: ModelOpt = None,
    state: Annotated[str | None, typer.Option(help="pending | firing | resolved | inactive")] = None,
    since: SinceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts and their state, latest change first."""
    from monitor.cli.oncall import alerts_list  # noqa: PLC0415

    since_iso = _options(lambda: parse_since(since))
    _options(lambda: check_choice("--state", state, ("pending", "firing", "resolved", "inactive")))
    with _store(config, state_dir) as store:
        alerts_list(store, model=model, state=state, since=since_iso, as_json=as_json, echo=_echo)


def dead_letters(
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    since: SinceOpt = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason code, e.g. not_json, bad_type.")] = None,
    by_reason: Annotated[bool, typer.Option("--by-reason", help="Counts per reason code instead of letters.")] = False,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write every matching letter as JSON lines to this new file (- = stdout).")
    ] = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """Messages that could not be used, with their reason and payload, newest first."""
    from monitor.cli.oncall import dead_letters as show  # noqa: PLC0415

    since_iso = _options(lambda: parse_since(since))
    with _store(config, state_dir) as store:
        show(store, since=since_iso, reason=reason, by_reason=by_reason, limit=limit, export=export,
             as_json=as_json, echo=_echo)


def deliveries(
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    model: ModelOpt = None,
    state: Annotated[str | None, typer.Option(help="pending | sent | dead")] = None,
    notifier: Annotated[str | None, typer.Option(help="Only this notifier.")] = None,
    since: SinceOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """The notification outbox: what was sent, what is retrying, what gave up."""
    from monitor.cli.oncall import deliveries as show  # noqa: PLC0415
    from storage.alerts import DELIVERY_STATUSES  # noqa: PLC0415

    _options(lambda: check_choice("--state", state, DELIVERY_STATUSES))
    since_iso = _options(lambda: parse_since(since))
    with _store(config, state_dir) as store:
        show(store, model=model, state=state, notifier=notifier, since=since_iso, limit=limit, as_json=as_json,
             echo=_echo)


def status(config: ConfigOpt = None, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """What the state directory holds: windows, alerts, deliveries, dead letters, the label join."""
    from monitor.cli.access import config_of  # noqa: PLC0415
    from monitor.cli.oncall import status as show  # noqa: PLC0415

    cfg = _options(lambda: config_of(config))
    with _store(config, state_dir) as store:
        show(store, as_json=as_json, echo=_echo, models=cfg.models if cfg is not None else None)


def migrate(
    config: ConfigOpt = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Upgrade this state directory's database instead of the config's.")
    ] = None,
    missing_ok: Annotated[
        bool, typer.Option("--missing-ok", help="No database yet is not an error (a first install: run creates it).")
    ] = False,
) -> None:
    """Upgrade the state directory's database (or the config's shared PostgreSQL) to this
    version's schema (back it up first)."""
    from monitor.cli.access import config_of, state_dir_of  # noqa: PLC0415
    from storage.db import DB_FILENAME, StorageError, Store  # noqa: PLC0415
    from storage.schema import LATEST_VERSION  # noqa: PLC0415

    cfg = _options(lambda: config_of(config)) if state_dir is None else None
    if cfg is not None and cfg.storage.url is not None:
        _migrate_shared(cfg, LATEST_VERSION)
        return
    folder = _options(lambda: state_dir_of(config, state_dir))
    path = Path(folder) / DB_FILENAME
    if not path.is_file():
        if missing_ok:
            typer.echo(f"{path}: no database yet (the daemon creates it at its first start): nothing to migrate")
            return
        typer.echo(f"driftwarden: no database at {path}: nothing to migrate", err=True)
        raise typer.Exit(1)
    from storage.state_dir import StateDirBusy, StateDirError, lock_state_dir  # noqa: PLC0415

    # the daemon's (and a replay's) lock: migrating under a running daemon would change the
    # schema of the file an older version is writing (SQLite has no guard against that) and
    # hold its writes up for as long as a migration rewrites a table
    try:
        lock = lock_state_dir(folder, exclusive=True)
    except StateDirBusy as exc:
        typer.echo(f"driftwarden: migrate: {exc.in_use}; stop it, then migrate", err=True)
        raise typer.Exit(1) from None
    except StateDirError as exc:
        typer.echo(f"driftwarden: migrate: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        before = Store(path, readonly=True, migrate=False)
        old = before.schema_version()
        before.close()
        Store(path).close()  # opening read-write applies the pending migrations (refuses a newer schema)
    except StorageError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        lock.release()
    typer.echo(f"{path}: schema version {old} -> {LATEST_VERSION}")


def _migrate_shared(cfg: Any, latest: int) -> None:
    """``migrate`` on the shared PostgreSQL store (migrations take an advisory lock: one
    instance or command applies each)."""
    from monitor.service.store import open_store  # noqa: PLC0415
    from storage.db import StorageError  # noqa: PLC0415

    try:
        before = open_store(cfg, readonly=True, application_name="driftwarden migrate", migrate=False)
        old = before.schema_version()
        before.close()
        open_store(cfg, application_name="driftwarden migrate").close()  # applies the pending ones (or refuses)
    except StorageError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"shared store: schema version {old} -> {latest}")


# --------------------------------------------------------------------------- silences

silence_app = typer.Typer(help="Mute notifications of a model and/or rule for a while (state keeps changing).")


@silence_app.command("add")
def silence_add(
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    model: ModelOpt = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule.")] = None,
    duration: Annotated[str | None, typer.Option("--for", help='How long, e.g. "2h".')] = None,
    until: Annotated[str | None, typer.Option("--until", help="Until then, e.g. 2026-11-24T09:00Z.")] = None,
    comment: Annotated[str, typer.Option(help="Why (shown in `silence list`).")] = "",
    created_by: Annotated[str, typer.Option("--by", help="Who.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Add a silence (written to the store; a running daemon applies it at its next notification)."""
    from monitor.cli.oncall import silence_add as add  # noqa: PLC0415

    known = known_models = None
    if config is not None and state_dir is None:
        cfg = _options(lambda: config_of(config))
        known, known_models = [r.name for r in cfg.rules], [m.name for m in cfg.models]
    with _store(config, state_dir, write=True) as store:
        add(store, model=model, rule=rule, duration=duration, until=until, comment=comment, created_by=created_by,
            known_rules=known, known_models=known_models, as_json=as_json, echo=_echo)


@silence_app.command("list")
def silence_list(
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    include_ended: Annotated[bool, typer.Option("--all", help="Also silences that ended.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Active silences (all with --all), newest first."""
    from monitor.cli.oncall import silence_list as show  # noqa: PLC0415

    with _store(config, state_dir) as store:
        show(store, include_ended=include_ended, as_json=as_json, echo=_echo)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[str, typer.Argument(help="The silence's id (see `silence list`).")],
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """End a silence now (it stays listed with --all)."""
    from monitor.cli.oncall import silence_expire as expire  # noqa: PLC0415

    with _store(config, state_dir, write=True) as store:
        expire(store, silence_id, echo=_echo)


def report(
    window: Annotated[str, typer.Option(
        "--window", help="The window: its ref or id as `windows` lists it, or the URL-safe id of a report link.")],
    out: Annotated[Path, typer.Option("--out", help="Write the HTML report to this file (mode 0600).")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Evidently HTML report of a stored window, from the sample of its rows kept at close."""
    from monitor.cli.report import write_report  # noqa: PLC0415
    from storage.oncall import find_window  # noqa: PLC0415

    cfg = _options(lambda: config_of(config))
    with _store(config, state_dir) as store:
        found = find_window(store, window)
        if len(found) > 1:
            raise CliError(f'"{window}" matches {len(found)} windows: give more characters of the ref, or the id')
        code = write_report(store, found[0]["id"] if found else window, out, model=model, config=cfg, echo=typer.echo)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the on-call commands to the ``driftwarden`` app."""
    app.add_typer(windows_app, name="windows")
    app.command()(alerts)
    app.command("dead-letters")(dead_letters)
    app.command()(deliveries)
    app.add_typer(silence_app, name="silence")
    app.command()(status)
    app.command()(migrate)
    app.command()(report)
