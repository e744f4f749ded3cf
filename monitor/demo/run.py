"""``driftwarden demo``: the whole loop on one machine, in under a minute.

Starts the embedded broker on a free loopback port, a Slack API stand-in and a
webhook sink (retraining service), writes a reference file and a config into
the state directory, produces a churn-model stream whose distribution shifts
halfway, runs the real daemon, prints each window's verdict and each alert as
it happens, then stops everything it started. The state directory is left for
``driftwarden windows --state-dir …`` and friends.

The label stream follows the predictions: once every window is in, the demo
produces the ground truth (labels two minutes after their predictions, in event
time). The shift of the second half moves customers towards the decision
boundary, so the model is right less often there: the estimated accuracy (from the
scores alone, calibrated on the reference's labels) flags it as each window
closes, and the labels confirm it when they come.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

WINDOWS = 10
PER_WINDOW = 600
SHIFT_FROM = 5
SECRET = "whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9u"

CONFIG = """\
# Written by `driftwarden demo`; every option is documented in config.example.toml.
[daemon]
state_dir = "."
http_listen = "127.0.0.1:{http_port}"
# the demo's links (reports, API, retraining callback) are meant for this machine only
public_url = "http://127.0.0.1:{http_port}"
tick_interval = "1s"
log_level = "warning"

[kafka]
bootstrap_servers = ["{bootstrap}"]
group_id = "driftwarden-demo"
labels_topic = "labels"
session_timeout = "6s"
heartbeat_interval = "1s"
commit_interval = "1s"
poll_timeout = "200ms"

[[models]]
name = "churn"
reference = "reference.csv"
segments = ["region"]
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]
[models.window]
type = "tumbling"
size = "1m"
lateness = "0s"
min_rows = 100
idle_timeout = "2s"
[models.performance]
enabled = true

[labels]
delay = "1m"
recompute_interval = "1s"

[[rules]]
name = "accuracy-estimate"
metric = "estimated_accuracy"
op = "<"
threshold = 0.78
severity = "warning"
notifiers = ["slack"]

[[rules]]
name = "accuracy"
metric = "accuracy"
op = "<"
threshold = 0.78
severity = "critical"
notifiers = ["slack"]

[[rules]]
name = "dataset-drift"
metric = "drift_share"
op = ">="
threshold = 0.5
severity = "critical"
resolve_after = 2
notifiers = ["slack", "retrain"]

[notifiers.slack]
type = "slack"
token_env = "DRIFTWARDEN_DEMO_SLACK_TOKEN"
channel = "#ml-alerts"
base_url = "{slack_url}"
backoff = "1s"

[notifiers.retrain]
type = "webhook"
kind = "retrain"
url = "{webhook_url}/retrain"
secret_env = "DRIFTWARDEN_DEMO_WEBHOOK_SECRET"
cooldown = "1h"
backoff = "1s"
"""


#: the file that marks a folder as the demo's own (the demo rewrites only such folders)
MARKER = ".driftwarden-demo"


def cli_command() -> str:
    """How to run ``driftwarden`` from the shell the demo was started from: the bare name
    when ``PATH`` finds it, else the script beside this Python (a virtualenv that is not
    activated, as after the README's install command), else ``python -m``; quoted for a
    POSIX shell."""
    if shutil.which("driftwarden"):
        return "driftwarden"
    beside = Path(sys.executable).parent / "driftwarden"
    if beside.exists():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m monitor.cli.app"


def demo_state_refusal(state_dir: Path) -> str | None:
    """Why the demo must not use ``state_dir`` (None when it may): the demo deletes and
    rewrites its database, so it only touches a new or empty folder, or one it made."""
    if not state_dir.exists():
        return None
    if not state_dir.is_dir():
        return f"--state-dir {state_dir} is not a folder; give a new folder"
    if (state_dir / MARKER).is_file() or not any(state_dir.iterdir()):
        return None
    return (
        f"--state-dir {state_dir} holds files the demo did not create (no {MARKER} marker);"
        " it would delete its driftwarden.db. Give a new or empty folder"
    )


def write_demo_config(state_dir: Path, *, http_port: int, bootstrap: str, slack_url: str, webhook_url: str) -> Path:
    """Write the demo's config (``demo.toml``) into ``state_dir`` and return its path.

    ``webhook_url`` is the sink's base URL without a trailing ``/``. The daemon listens on
    ``127.0.0.1:http_port`` and that is also its public URL: the demo's links are for this
    machine, so it sets ``daemon.public_url`` rather than have the daemon warn that it is unset.
    """
    path = state_dir / "demo.toml"
    path.write_text(CONFIG.format(http_port=http_port, bootstrap=bootstrap, slack_url=slack_url,
                                  webhook_url=webhook_url))
    return path


def run_demo(state_dir: Path, *, timeout: float = 120.0) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.markup import escape  # noqa: PLC0415  (values from the stream are never markup)

    console = Console(highlight=False, soft_wrap=True)
    t0 = time.monotonic()
    state_dir = Path(state_dir).resolve()
    refusal = demo_state_refusal(state_dir)
    if refusal:
        console.print(f"driftwarden demo: {refusal}", markup=False)
        return 2
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a parent folder should be, no permission
        console.print(f"driftwarden demo: --state-dir {state_dir}: cannot create it: {exc.strerror or exc}", markup=False)
        return 2
    (state_dir / MARKER).write_text("created by `driftwarden demo`; it may delete and rewrite this folder\n")
    for stale in ("driftwarden.db", "driftwarden.db-wal", "driftwarden.db-shm"):
        (state_dir / stale).unlink(missing_ok=True)

    import orjson  # noqa: PLC0415

    from monitor.config import load_config  # noqa: PLC0415
    from monitor.demo.broker import BrokerUnavailable, EmbeddedBroker, free_port  # noqa: PLC0415
    from monitor.demo.data import events, label_events, write_reference_csv  # noqa: PLC0415
    from monitor.demo.sinks import SlackStandIn, WebhookSink  # noqa: PLC0415
    from monitor.ingest.kafka_client import make_producer  # noqa: PLC0415
    from monitor.service.daemon import Daemon  # noqa: PLC0415
    from storage.alerts import delivery_counts, list_alerts, list_deliveries  # noqa: PLC0415
    from storage.db import Store  # noqa: PLC0415
    from storage.dead_letters import list_dead_letters  # noqa: PLC0415
    from storage.scores import drifted_column_text  # noqa: PLC0415
    from storage.windows import drifted_columns, metric_value, windows_with_verdicts  # noqa: PLC0415

    console.print("[bold]driftwarden demo[/bold]: embedded broker, drifting stream, Slack and webhook stand-ins")
    broker = EmbeddedBroker(log_path=state_dir / "broker.log")
    try:
        broker.start()
    except BrokerUnavailable as exc:
        console.print(f"[red]cannot start the embedded broker:[/red] {exc}")
        return 1
    slack = SlackStandIn().start()
    sink = WebhookSink(secret=SECRET).start()
    daemon = None
    thread = None
    try:
        broker.create_topic("predictions", partitions=1)
        broker.create_topic("labels", partitions=1)
        write_reference_csv(str(state_dir / "reference.csv"), label=True)
        os.environ["DRIFTWARDEN_DEMO_SLACK_TOKEN"] = "xoxb-demo-token"
        os.environ["DRIFTWARDEN_DEMO_WEBHOOK_SECRET"] = SECRET
        cfg = load_config(write_demo_config(state_dir, http_port=free_port(), bootstrap=broker.bootstrap,
                                            slack_url=slack.url, webhook_url=sink.url.rstrip("/")))
        console.print(f"  broker   {broker.bootstrap}   slack stand-in {slack.url}   webhook sink {sink.url}")
        console.print(f"  state    {escape(str(state_dir))}")

        start = (datetime.now(UTC) - timedelta(minutes=WINDOWS + 2)).replace(second=0, microsecond=0)
        producer = make_producer(cfg, linger_ms=5)
        stream = list(events(model="churn", start=start, windows=WINDOWS, per_window=PER_WINDOW,
                             window_seconds=60, shift_from=SHIFT_FROM))
        for ev in stream:
            producer.send("predictions", orjson.dumps(ev))
        for bad in (b"not json", b'{"model": "churn"}', b'{"model": "unknown", "prediction": 1}'):
            producer.send("predictions", bad)
        producer.flush()
        console.print(
            f"  produced {WINDOWS * PER_WINDOW} events in {WINDOWS} one-minute windows "
            f"(shift from window {SHIFT_FROM + 1}) and 3 malformed messages; labels follow later\n"
        )

        daemon = Daemon(cfg)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        reader = Store(state_dir / "driftwarden.db")
        seen_windows: set[str] = set()
        seen_alerts: set[tuple[str, str]] = set()
        seen_deliveries: set[str] = set()
        first_alert_at = None
        first_drifted: str | None = None
        labels_sent_at: float | None = None
        estimate_fired_at: float | None = None
        seen_perf: set[str] = set()
        deadline = time.monotonic() + timeout
        finished = False
        while time.monotonic() < deadline:
            for w in windows_with_verdicts(reader, segment="", oldest_first=True):
                if w["id"] in seen_windows:
                    continue
                seen_windows.add(w["id"])
                cols = drifted_columns(reader, w["id"])
                if w["dataset_drift"] and first_drifted is None:
                    first_drifted = w["id"]
                verdict = "[red]DRIFT[/red]   " if w["dataset_drift"] else "[green]no drift[/green]"
                cols_txt = escape(", ".join(drifted_column_text(c["column"], c["test"], c["value"]) for c in cols) or "-")
                share = w["drift_share"] if w["drift_share"] is not None else float("nan")
                est = metric_value(reader, w["id"], "estimated_accuracy")
                est_txt = f"  est. accuracy {est:.2f}" if est is not None else ""
                console.print(
                    f"  window {w['start'][11:16]}–{w['end'][11:16]}  rows {w['rows']:>4}  {verdict}  "
                    f"share {share:.2f}{est_txt}  drifted: {cols_txt}"
                )
            for w in windows_with_verdicts(reader, segment="", oldest_first=True):
                acc = (w.get("performance") or {}).get("accuracy")
                if w["id"] in seen_perf or acc is None or w["label_coverage"] is None or w["label_coverage"] < 0.99:
                    continue
                seen_perf.add(w["id"])
                console.print(
                    f"  labels {w['start'][11:16]}–{w['end'][11:16]}  coverage {w['label_coverage']:.2f}  "
                    f"accuracy {acc['value']:.2f} [{acc['ci_low']:.2f}, {acc['ci_high']:.2f}]"
                )
            for a in reversed(list_alerts(reader)):
                key = (a["id"], a["state"])
                if key in seen_alerts or a["state"] not in ("firing", "resolved"):
                    continue
                seen_alerts.add(key)
                if first_alert_at is None and a["state"] == "firing":
                    first_alert_at = time.monotonic() - t0
                if estimate_fired_at is None and a["state"] == "firing" and a["rule"] == "accuracy-estimate":
                    estimate_fired_at = time.monotonic()
                colour = "red" if a["state"] == "firing" else "green"
                console.print(
                    f"  [{colour}]ALERT {a['state'].upper()}[/{colour}] {a['severity']} {escape(a['rule'])} on {escape(a['model'])}: "
                    f"value {a['value']:.2f} vs threshold {a['threshold']}  ({time.monotonic() - t0:.1f}s)"
                )
            for dl in list_deliveries(reader, status="sent"):
                if dl.id in seen_deliveries:
                    continue
                seen_deliveries.add(dl.id)
                console.print(f"    delivered {dl.kind} to {dl.notifier} (attempt {dl.attempts}, id {dl.id[:12]}…)")
            pending = sum(n for (_, st), n in delivery_counts(reader).items() if st == "pending")
            if len(seen_windows) >= WINDOWS and labels_sent_at is None:
                # the ground truth arrives after the fact: two minutes after each prediction
                for lab in label_events(stream, delay_ms=120_000):
                    producer.send("labels", orjson.dumps(lab))
                producer.flush()
                labels_sent_at = time.monotonic()
                console.print(f"  [bold]labels[/bold] for all {len(stream)} predictions produced after {labels_sent_at - t0:.1f}s")
            if len(seen_perf) >= WINDOWS and pending == 0 and time.monotonic() - t0 > 5:
                finished = True
                break
            time.sleep(0.3)
        producer.close()
        daemon.stop()
        thread.join(timeout=30)
        # the point of the estimate: it flags the accuracy drop before any label arrives
        early = estimate_fired_at is not None and labels_sent_at is not None and estimate_fired_at <= labels_sent_at
        ok = len(seen_windows) >= WINDOWS and first_alert_at is not None and len(seen_perf) >= WINDOWS and early
        letters = list_dead_letters(reader)
        console.print("")
        console.print(f"  dead letters: {len(letters)}  " + escape("; ".join(d["reason"][:60] for d in reversed(letters))))
        console.print(
            f"  slack stand-in: {len(slack.calls('chat.postMessage'))} message(s), "
            f"{len(slack.calls('chat.update'))} update(s); webhook sink: {len(sink.requests)} request(s)"
        )
        for r in sink.requests:
            verified = getattr(r, "verified", None)
            console.print(f"    webhook {r.path} id={r.headers.get('webhook-id', '?')[:16]}… signature {'verified' if verified else 'NOT verified'}")
        if early:
            assert estimate_fired_at is not None and labels_sent_at is not None
            console.print(f"  the estimate flagged the accuracy drop {labels_sent_at - estimate_fired_at:.1f}s"
                          " before the first label was produced")
        elif labels_sent_at is not None and (estimate_fired_at is not None or finished):
            console.print("  [red]the accuracy estimate did not fire before the labels came[/red]")
        if not finished:  # not a verdict on the estimate: the demo stopped waiting
            console.print(
                f"  [red]gave up after {timeout:g}s (--timeout): {min(len(seen_windows), WINDOWS)} of {WINDOWS}"
                f" windows closed, {min(len(seen_perf), WINDOWS)} of {WINDOWS} labelled"
                f"{'' if labels_sent_at is not None else ' (no labels produced yet)'};"
                " on a slow machine give a larger --timeout[/red]"
            )
        if first_alert_at is not None:
            console.print(f"  first alert after {first_alert_at:.1f}s; total {time.monotonic() - t0:.1f}s")
        cli = cli_command()
        console.print(escape(f"\n  inspect: {cli} windows --state-dir {state_dir}   |   {cli} alerts --state-dir {state_dir}"))
        if first_drifted is not None:
            console.print(escape(f"  report:  {cli} report --state-dir {state_dir} --window '{first_drifted}' --out report.html"))
        reader.close()
        return 0 if ok else 1
    finally:
        if daemon is not None and thread is not None and thread.is_alive():
            daemon.stop()
            thread.join(timeout=10)
        slack.stop()
        sink.stop()
        broker.stop()
