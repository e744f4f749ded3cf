"""The ``driftwarden`` command line. Heavy imports (pandas, evidently, kafka) happen
inside commands, so ``--help`` answers at once."""

from __future__ import annotations

import json
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
    from storage.db import DB_FILENAME, Store  # noqa: PLC0415

    if state_dir is None:
        if config is None:
            typer.echo("driftwarden: give --config or --state-dir", err=True)
            raise typer.Exit(2)
        state_dir = _load(config).daemon.state_dir
    path = Path(state_dir) / DB_FILENAME
    if not path.exists():
        typer.echo(f"driftwarden: no database at {path}", err=True)
        raise typer.Exit(1)
    return Store(path)


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the daemon until SIGTERM/SIGINT (drains, commits, exits 0)."""
    cfg = _load(config)
    from monitor.logs import setup_logging  # noqa: PLC0415

    setup_logging(cfg.daemon.log_level, cfg.daemon.log_format, secrets=cfg.secrets)
    import signal  # noqa: PLC0415

    # start-up (imports, preparing references) takes a moment: a signal meanwhile
    # means "do not start", and exits 0 without touching Kafka
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    from monitor.service.daemon import Daemon  # noqa: PLC0415

    if early:
        raise typer.Exit(0)
    daemon = Daemon(cfg)
    daemon.install_signal_handlers()
    if early:
        daemon.store.close()
        raise typer.Exit(0)
    raise typer.Exit(daemon.run())


@app.command()
def check(config: ConfigOpt) -> None:
    """Validate the config, then reach Kafka, Slack and the webhooks. Exit 0 if all is well, 1 if not, 2 for a bad config."""
    cfg = _load(config)
    from monitor.cli.check import run_checks  # noqa: PLC0415

    ok = run_checks(cfg, echo=typer.echo)
    raise typer.Exit(0 if ok else 1)


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Where to leave the demo's state.")] = Path("demo-state"),
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 120.0,
) -> None:
    """Everything embedded: a local broker, a drifting stream, Slack and webhook stand-ins."""
    from monitor.demo.run import run_demo  # noqa: PLC0415

    raise typer.Exit(run_demo(state_dir, timeout=timeout))


@app.command()
def windows(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The TOML config file.")] = None,
    state_dir: StateOpt = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    segment: Annotated[str | None, typer.Option(help='Only this segment ("" = all rows).')] = None,
    limit: Annotated[int, typer.Option(help="At most this many windows.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Stored windows with their drift verdicts and, once labels matured, their label
    coverage and headline performance (with its confidence interval), newest first."""
    from storage.windows import windows_with_verdicts  # noqa: PLC0415

    store = _store(config, state_dir)
    rows = windows_with_verdicts(store, model=model, segment=segment, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    cols = ["model", "version", "segment", "start", "end", "rows", "status", "drift_share", "dataset_drift"]
    if any(r.get("label_coverage") is not None for r in rows):
        for r in rows:
            r["performance"] = _performance_text(r.get("performance") or {})
        cols += ["label_coverage", "performance"]
    _table("windows", cols, rows)


def _performance_text(perf: dict[str, Any]) -> str | None:
    """The first headline figure of a window, as ``accuracy 0.831 [0.80, 0.86]``."""
    for name, f in perf.items():
        if f.get("value") is None:
            continue
        text = f"{name} {f['value']:.3g}"
        if f.get("ci_low") is not None and f.get("ci_high") is not None:
            text += f" [{f['ci_low']:.3g}, {f['ci_high']:.3g}]"
        return text
    return None


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
    """What the state directory holds: windows, alerts, deliveries, dead letters, the label join."""
    from storage.alerts import alert_counts, delivery_counts  # noqa: PLC0415
    from storage.dead_letters import dead_letter_total  # noqa: PLC0415
    from storage.labels import label_counters, slots_waiting  # noqa: PLC0415
    from storage.windows import window_counts  # noqa: PLC0415

    store = _store(config, state_dir)
    out = {
        "schema_version": store.schema_version(),
        "windows": window_counts(store),
        "alerts": [{"state": k[0], "severity": k[1], "n": n} for k, n in sorted(alert_counts(store).items())],
        "deliveries": [{"notifier": k[0], "status": k[1], "n": n} for k, n in sorted(delivery_counts(store).items())],
        "dead_letters": dead_letter_total(store),
        "label_join": label_counters(store),
        "performance_windows_waiting": slots_waiting(store),
    }
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console  # noqa: PLC0415

    Console().print_json(json.dumps(out))


def _table(title: str, cols: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"{title} ({len(rows)})")
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    Console().print(t)


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
