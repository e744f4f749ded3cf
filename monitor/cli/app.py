"""The ``driftwarden`` command line. Heavy imports (pandas, evidently, kafka) happen
inside commands, so ``--help`` answers at once."""

from __future__ import annotations

import json
import os
import re
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

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The TOML config file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON instead of a table.")]
StateOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="Read this state directory instead of the config's.")
]


def _load(config: Path) -> Any:
    from monitor.config import ConfigError, load_config  # noqa: PLC0415

    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None


def _store(config: Path | None, state_dir: Path | None) -> Any:
    """The store read commands read: the config's (SQLite or the shared PostgreSQL), or
    the SQLite database in ``--state-dir``; opened read-only."""
    from storage.db import DB_FILENAME, StorageError, Store  # noqa: PLC0415

    if state_dir is None:
        if config is None:
            typer.echo("driftwarden: give --config or --state-dir", err=True)
            raise typer.Exit(2)
        cfg = _load(config)
        if cfg.storage.url is not None:
            from monitor.service.store import open_store  # noqa: PLC0415

            try:
                return open_store(cfg, readonly=True, application_name="driftwarden cli")
            except StorageError as exc:
                typer.echo(f"driftwarden: {exc}", err=True)
                raise typer.Exit(1) from None
        state_dir = cfg.daemon.state_dir
    path = Path(state_dir) / DB_FILENAME
    if not path.exists():
        typer.echo(f"driftwarden: no database at {path}", err=True)
        raise typer.Exit(1)
    return Store(path, readonly=True)  # read commands write nothing and change no mode


def _private_umask() -> None:
    """What the daemon creates from here on is readable by its user only (0700/0600)."""
    from storage.state_dir import DAEMON_UMASK  # noqa: PLC0415

    os.umask(DAEMON_UMASK)


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the daemon until SIGTERM/SIGINT (drains, commits, exits 0)."""
    _private_umask()
    cfg = _load(config)
    from monitor.logs import setup_logging  # noqa: PLC0415

    setup_logging(cfg.daemon.log_level, cfg.daemon.log_format, secrets=cfg.secrets)
    import signal  # noqa: PLC0415

    # start-up (imports, preparing references) takes a moment: a signal meanwhile
    # means "do not start", and exits 0 without touching Kafka
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    from monitor.references.load import ReferenceError  # noqa: PLC0415
    from monitor.service.daemon import Daemon  # noqa: PLC0415

    if early:
        raise typer.Exit(0)
    try:
        daemon = Daemon(cfg)
    except ReferenceError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None
    daemon.install_signal_handlers()
    if early:
        daemon.store.close()
        raise typer.Exit(0)
    raise typer.Exit(daemon.run())


@app.command()
def check(config: ConfigOpt) -> None:
    """Validate the config and load the references, then reach Kafka, Slack and the webhooks.
    Exit 0 if all is well, 1 if not, 2 for a bad config or reference."""
    cfg = _load(config)
    from monitor.cli.check import check_references, run_checks  # noqa: PLC0415
    from monitor.references.load import ReferenceError  # noqa: PLC0415

    try:
        references = check_references(cfg)
    except ReferenceError as exc:
        typer.echo(f"driftwarden: {exc}", err=True)
        raise typer.Exit(2) from None
    ok = run_checks(cfg, echo=typer.echo, references=references)
    raise typer.Exit(0 if ok else 1)


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Where to leave the demo's state.")] = Path("demo-state"),
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 120.0,
) -> None:
    """Everything embedded: a local broker, a drifting stream, Slack and webhook stand-ins."""
    _private_umask()
    from monitor.demo.run import run_demo  # noqa: PLC0415

    raise typer.Exit(run_demo(state_dir, timeout=timeout))


@app.command()
def windows(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The TOML config file.")] = None,
    state_dir: StateOpt = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    segment: Annotated[str | None, typer.Option(help='Only this segment ("" = all rows).')] = None,
    limit: Annotated[int, typer.Option(help="At most this many windows.")] = 50,
    show: Annotated[str | None, typer.Option("--show", help="One window's figures (its id), with every threshold.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stored windows with their drift verdicts and thresholds, newest first."""
    from storage.windows import window_metrics, windows_with_verdicts  # noqa: PLC0415

    store = _store(config, state_dir)
    if show is not None:
        figures = window_metrics(store, show)
        if as_json:
            typer.echo(json.dumps(figures, indent=2))
            return
        _table(f"window {show}", ["column", "metric", "test", "value", "threshold", "p_value", "drifted"], figures)
        return
    rows = windows_with_verdicts(store, model=model, segment=segment, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _table(
        "windows",
        ["model", "version", "segment", "start", "end", "rows", "status", "reference", "drift_share",
         "share_threshold", "dataset_drift"],
        rows,
    )


@app.command()
def alerts(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The TOML config file.")] = None,
    state_dir: StateOpt = None,
    state: Annotated[str | None, typer.Option(help="pending | firing | resolved")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts and their state."""
    from storage.alerts import list_alerts  # noqa: PLC0415

    rows = list_alerts(_store(config, state_dir), state=state)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _table("alerts", ["rule", "model", "state", "severity", "value", "threshold", "started_at", "fired_at", "resolved_at"], rows)


@app.command()
def status(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The TOML config file.")] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the store holds: windows, alerts, deliveries, dead letters, and which instance
    owns each partition's stream state (with several instances on PostgreSQL)."""
    from storage.alerts import alert_counts, delivery_counts  # noqa: PLC0415
    from storage.dead_letters import dead_letter_total  # noqa: PLC0415
    from storage.stream import partition_rows  # noqa: PLC0415
    from storage.windows import window_counts  # noqa: PLC0415

    store = _store(config, state_dir)
    out = {
        "schema_version": store.schema_version(),
        "windows": window_counts(store),
        "alerts": [{"state": k[0], "severity": k[1], "n": n} for k, n in sorted(alert_counts(store).items())],
        "deliveries": [{"notifier": k[0], "status": k[1], "n": n} for k, n in sorted(delivery_counts(store).items())],
        "dead_letters": dead_letter_total(store),
        "partitions": [
            {k: r[k] for k in ("topic", "partition", "owner", "offset", "updated_at")}
            for r in partition_rows(store)
        ],
    }
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console  # noqa: PLC0415

    Console().print_json(json.dumps(out))


def _table(title: str, cols: list[str], rows: list[dict[str, Any]]) -> None:
    """Rows as a rich table. Cells are ``Text`` (never parsed as markup: a value such as
    ``region=[/]`` or ``[bold]`` from the stream is shown as it is), with control
    characters shown escaped (``\x1b``) so no value can drive the terminal."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    t = Table(title=f"{title} ({len(rows)})")
    for c in cols:
        t.add_column(Text(_printable(c)))
    for r in rows:
        t.add_row(*[Text(_printable(_fmt(r.get(c)))) for c in cols])
    Console(highlight=False).print(t)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    """``text`` with control characters (ESC, CR, ...) written as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main() -> None:
    app(prog_name="driftwarden")


if __name__ == "__main__":
    sys.exit(main())
