"""The ``driftwarden`` command line. Heavy imports (pandas, evidently, kafka) happen
inside commands, so ``--help`` answers at once. The daemon's commands (run, check,
healthcheck, demo) are here; the on-call read commands in :mod:`monitor.cli.commands`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="driftwarden",
    help="Watch ML models in production: drift, data quality and performance over Kafka windows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", envvar="DRIFTWARDEN_CONFIG", help="The TOML config file.")
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            typer.echo(f"driftwarden {version('driftwarden')}")
        except PackageNotFoundError:
            typer.echo("driftwarden (not installed: version unknown)")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Watch ML models in production: drift, data quality and performance over Kafka windows."""


def _load(config: Path) -> Any:
    from monitor.config import ConfigError, load_config  # noqa: PLC0415

    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the daemon until SIGTERM/SIGINT (drains, commits, exits 0); SIGHUP reloads the config."""
    cfg = _load(config)
    from monitor.logs import setup_logging  # noqa: PLC0415
    from storage.state_dir import DAEMON_UMASK, StateDirError, prepare_state_dir  # noqa: PLC0415

    setup_logging(cfg.daemon.log_level, cfg.daemon.log_format, secrets=cfg.secrets)
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415

    for warning in cfg.warnings:  # e.g. a secret file every user can read
        logging.getLogger("driftwarden.config").warning("%s", warning)
    import signal  # noqa: PLC0415

    os.umask(DAEMON_UMASK)  # the state dir is 0700 and every file in it 0600
    try:
        prepare_state_dir(cfg.daemon.state_dir)
    except StateDirError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None

    # start-up (imports, preparing references) takes a moment: a signal meanwhile
    # means "do not start", and exits 0 without touching Kafka
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    # a SIGHUP while starting (its default action kills) reloads once the daemon runs
    hup: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: hup.append(signum))
    from monitor.service.daemon import Daemon  # noqa: PLC0415

    if early:
        raise typer.Exit(0)
    daemon = _start_daemon(Daemon, cfg, config)
    daemon.install_signal_handlers()
    if early:
        daemon.store.close()
        raise typer.Exit(0)
    if hup:
        daemon.request_reload()
    from monitor.service.heap import settle_heap  # noqa: PLC0415

    logging.getLogger("driftwarden.daemon").debug("start-up objects frozen: %d", settle_heap())
    from monitor.web.server import ListenError  # noqa: PLC0415

    try:
        code = daemon.run()
    except ListenError as exc:  # a port in use may come free: status 1, started again
        why = f" ({exc.passing})" if exc.passing else ""  # what holds it, and what to do
        typer.echo(f"driftwarden: {exc}{why}; exiting with status 1 to be started again", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _start_daemon(daemon_cls: Any, cfg: Any, config: Path) -> Any:
    """The daemon, or exit 2 with what to fix when its store or a reference cannot be used;
    exit 1 when the shared database is unreachable or the store held by another process
    for now (a service manager retries)."""
    from monitor.references.load import ReferenceError  # noqa: PLC0415
    from storage.db import StorageError, StoreBusy, StoreUnreachable  # noqa: PLC0415
    from storage.state_dir import StateDirError  # noqa: PLC0415

    try:
        return daemon_cls(cfg, config_path=config)
    except StateDirError as exc:  # a replay's folder, or one a replay is using
        typer.echo(f"driftwarden: {exc}", err=True)
    except (StoreUnreachable, StoreBusy) as exc:
        key = "storage.url" if cfg.storage.url is not None else "daemon.state_dir"
        why = "" if isinstance(exc, StoreUnreachable) else " (held by another process for now)"
        typer.echo(f"driftwarden: {key}: {exc}{why}; exiting with status 1 to be started again"
                   " (systemd's Restart=on-failure, a container's restart policy)", err=True)
        raise typer.Exit(1) from None
    except StorageError as exc:
        if cfg.storage.url is not None:
            typer.echo(f"driftwarden: storage.url: {exc}", err=True)
        else:
            typer.echo(f"driftwarden: daemon.state_dir: {exc}; fix or move the database file", err=True)
    except ReferenceError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)  # it names the model, the file and the column
    raise typer.Exit(2)


@app.command()
def check(
    config: ConfigOpt,
    pre_start: Annotated[
        bool,
        typer.Option(
            "--pre-start",
            help="Fail only on what this host decides (config, references, state dir); report"
            " Kafka, Slack and webhooks without failing (systemd's ExecStartPre).",
        ),
    ] = False,
) -> None:
    """Validate the config and load the references, then reach Kafka, Slack and the webhooks.
    Exit 0 if all is well, 1 if not, 2 for a bad config, reference, state dir or SQLite database."""
    cfg = _load(config)
    from monitor.cli.check import check_references, run_checks  # noqa: PLC0415
    from monitor.references.load import ReferenceError  # noqa: PLC0415

    try:
        ref_warnings: list[str] = []
        # before `run` (systemd), calibrating each model here would double the start-up:
        # the daemon logs the same warning when it calibrates
        references = check_references(cfg, ref_warnings, calibrate=not pre_start)
    except ReferenceError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_checks(cfg, echo=typer.echo, references=references, reachability_fatal=not pre_start,
                                reference_warnings=ref_warnings))


@app.command()
def healthcheck(
    config: ConfigOpt,
    timeout: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Ask the running daemon's /healthz at the configured listen address: exit 0 if it answers 200, else 1."""
    from monitor.cli.health import healthz_url, listen_of, probe  # noqa: PLC0415
    from monitor.config import ConfigError, load_config  # noqa: PLC0415

    try:
        target: Any = load_config(config)
    except ConfigError:  # edited since the daemon read it: still ask the daemon (exit 0 or 1 only)
        try:
            target = listen_of(config)
        except ValueError as exc:
            typer.echo(f"driftwarden: daemon.http_listen: {exc}", err=True)
            raise typer.Exit(1) from None
    ok, line = probe(healthz_url(target), timeout)
    typer.echo(line, err=not ok)
    raise typer.Exit(0 if ok else 1)


@app.command()
def replay(
    config: ConfigOpt,
    data: Annotated[Path, typer.Argument(help="Events to replay: .csv, .parquet or .jsonl, one event per row.")],
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where the replay's tables go: a new folder, or an earlier replay's.")
    ] = Path("replay-state"),
    notify: Annotated[bool, typer.Option(
        "--notify", help="Send the firing and resolved notifications the rules cause (off by default; never reminders)."
    )] = False,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="The event-time column (default: the model's ts field).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Every row is this model's (no model column needed).")] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Label events to join, interleaved in event time: .csv, .parquet or .jsonl, one label per row."
    )] = None,
) -> None:
    """Run the live pipeline and rules over a file (backfill, or trying thresholds on history)."""
    cfg = _load(config)
    for what, path in (("DATA", data), ("--labels", labels)):
        if path is None:
            continue
        if path.is_dir():  # a folder of exports is a likely slip: "no file" would be untrue
            typer.echo(f"driftwarden: {what}: {path} is a folder; give one .csv, .parquet or .jsonl file in it",
                       err=True)
            raise typer.Exit(2)
        if not path.is_file():
            typer.echo(f"driftwarden: {what}: no file {path}", err=True)
            raise typer.Exit(2)
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from monitor.references.load import ReferenceError  # noqa: PLC0415
    from monitor.service.replay import ReplayError, ReplayInterrupted, run_replay, unlabelled_note  # noqa: PLC0415
    from monitor.service.replay_source import ReplaySourceError, count_rows  # noqa: PLC0415
    from storage.state_dir import DAEMON_UMASK  # noqa: PLC0415

    os.umask(DAEMON_UMASK)  # the replay's folder is 0700 and its files 0600, as a daemon's
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    console = Console(stderr=True, highlight=False)
    if labels is None and (note := unlabelled_note(cfg)) is not None:
        typer.echo(f"driftwarden: note: {note}", err=True)
    try:
        total = count_rows(data)
        if labels is not None and total is not None:
            more = count_rows(labels)
            total = None if more is None else total + more
        bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                       TimeRemainingColumn(), console=console, transient=False)
        task = bar.add_task("replay", total=total)

        def advance(n: int) -> None:
            bar.start()  # at the first chunk: a file or option refused before shows no bar
            bar.advance(task, n)

        try:
            result = run_replay(cfg, data, state_dir, notify=notify, time_column=time_column, model=model,
                                progress=advance, labels=labels)
        finally:
            bar.stop()
    except (ReplayError, ReplaySourceError, ReferenceError) as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None
    except ReplayInterrupted as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before the replay began (counting the file's rows)
        typer.echo(f"driftwarden: replay interrupted before it began: nothing was replayed into {state_dir}", err=True)
        raise typer.Exit(130) from None
    typer.echo(
        f"replayed {result.rows} rows"
        + (f" and {result.labels_read} labels ({result.labels_joined} joined, {result.label_dead_letters}"
           " dead letters)" if labels is not None else "")
        + f": {result.windows} windows, {result.late_rows} late rows,"
        f" {result.dead_letters} dead letters, {result.alerts_fired} alert(s) fired"
        + (f", {result.deliveries_sent} notification(s) delivered" if notify else " (notifications off; --notify sends them)")
        + (f", {result.deliveries_pending} left pending (failed or timed out)" if result.deliveries_pending else "")
        + (f", {result.deliveries_dead} refused by the receiver" if result.deliveries_dead else "")
        + (f", {result.reminders_not_sent} reminder(s) not sent (reminders of the past)"
           if result.reminders_not_sent else "")
    )
    if result.labels_out_of_order:
        from monitor.config import format_duration  # noqa: PLC0415

        typer.echo(
            f"driftwarden: warning: {result.labels_out_of_order} label(s) of {labels} are stamped more than"
            f" labels.ttl ({format_duration(cfg.labels.ttl)}) before a label above them: the file is read in its"
            " order, as a topic is, so their predictions had likely left the join (not joined);"
            " sort the file by its time field and replay again", err=True,
        )
    typer.echo(f"see: driftwarden windows --state-dir {result.state_dir}")


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Where to leave the demo's state.")] = Path("demo-state"),
    timeout: Annotated[float, typer.Option(min=1, max=86_400, help="Give up after this many seconds.")] = 120.0,
) -> None:
    """Everything embedded: a local broker, a drifting stream, Slack and webhook stand-ins."""
    import os  # noqa: PLC0415

    from storage.state_dir import DAEMON_UMASK  # noqa: PLC0415

    os.umask(DAEMON_UMASK)
    from monitor.demo.run import run_demo  # noqa: PLC0415

    raise typer.Exit(run_demo(state_dir, timeout=timeout))


from monitor.cli.commands import register  # noqa: E402 - after the app they attach to

register(app)


def main() -> None:
    app(prog_name="driftwarden")


if __name__ == "__main__":
    sys.exit(main())
