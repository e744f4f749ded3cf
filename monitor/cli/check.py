"""``driftwarden check``: is this config ready to run? One line per check, never a secret.

Checks, each bounded in time: the config (already validated when it loaded) and
the reference files (loaded and validated as at start-up, see
:func:`check_references`; an unfit one exits 2 like a bad config), the state
directory is writable, Kafka answers and has the topics, each Slack notifier
authenticates (``auth.test``; an incoming-webhook URL is only reported as configured,
nothing is posted), each webhook's host accepts a TCP connection (nothing is sent).
A model whose stream state in the store was built with another window shape than
the config's is reported with ``!`` (see :func:`check_window_shapes`), never fatal.
With ``reachability_fatal=False`` (``check --pre-start``, systemd's ExecStartPre) the
reachability checks are reported but only the local ones decide the outcome, so a
Slack or Kafka outage does not keep the daemon from starting (it retries by itself).
Every line passes through :func:`redact`, which blanks every resolved secret, so an
error message that quotes a token or password cannot leak it.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from monitor.config import Config, SlackNotifierConfig, WebhookNotifierConfig
from monitor.logs import logged_warnings

T = TypeVar("T")

#: seconds any single check may take
TIMEOUT = 10.0
OK, FAIL, WARN = "✓", "✗", "!"


class CheckTimeout(Exception):
    pass


class CheckFailed(Exception):
    """A check's own verdict: its message is complete (no exception class name added)."""


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


def _bounded(fn: Callable[[], T], timeout: float = TIMEOUT) -> T:
    """Run ``fn`` in a daemon thread; give up after ``timeout`` (the thread may linger)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise CheckTimeout(f"no answer within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _reason(exc: BaseException) -> str:
    from storage.db import StorageError  # noqa: PLC0415 - its messages name the store and the fix

    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, CheckTimeout | CheckFailed | StorageError) or text.startswith(name):
        return text
    return f"{name}: {text}"


def _host_port(url: str) -> str:
    """``host:port`` of a URL: the only part printed (paths and queries may hold tokens)."""
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.hostname}:{port}"


def check_state_dir(cfg: Config) -> str:
    from storage.state_dir import StateDirError, prepare_state_dir  # noqa: PLC0415

    path = Path(cfg.daemon.state_dir)
    before = stat.S_IMODE(path.stat().st_mode) if path.is_dir() else None
    try:
        d = prepare_state_dir(path)  # as `run` does: created 0700, or narrowed to it
    except StateDirError as exc:
        raise CheckFailed(str(exc)) from None
    mode = stat.S_IMODE(d.stat().st_mode)
    fd, name = tempfile.mkstemp(prefix=".check-", dir=d)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)
    if before is not None and before != mode:
        return f"state dir {d} writable (mode {before:04o} narrowed to {mode:04o}, as the daemon does at start)"
    if mode & 0o077:  # a folder owned by another user is left as it is
        return f"state dir {d} writable (mode {mode:04o}, not ours to narrow)"
    return f"state dir {d} writable"


def check_listen(cfg: Config) -> tuple[bool | None, str]:
    """Whether the HTTP listen address can be bound now (bound and released at once), and
    the line that says so: ``True`` free, ``False`` not now but perhaps for the service or
    later (a warning: in use, maybe by this daemon running; a privileged port; the resolver
    away), ``None`` never bindable on this host (not its address, a name that does not
    resolve): ``run`` would fail at every start."""
    from monitor.web.server import ListenError, bind  # noqa: PLC0415

    try:
        bind(*cfg.daemon.listen_address).close()
    except ListenError as exc:
        if exc.passing is None:
            return None, str(exc)
        return False, f"{exc} ({exc.passing})"
    return True, f"http listen {cfg.daemon.http_listen} free"


def check_storage(cfg: Config) -> str:
    """The store: the shared PostgreSQL of ``[storage] url`` reachable and logged in, or
    the state dir's SQLite file readable (when there is one yet); its schema version."""
    from monitor.service.store import open_store, sqlite_path  # noqa: PLC0415
    from storage.db import refuse_newer_schema  # noqa: PLC0415
    from storage.schema import LATEST_VERSION  # noqa: PLC0415

    if cfg.storage.url is None and not sqlite_path(cfg).is_file():
        return f"database {sqlite_path(cfg)} created at start"
    store = open_store(cfg, readonly=True, application_name="driftwarden check")
    try:
        version = store.schema_version()
    finally:
        store.close()
    refuse_newer_schema(version, store.where)
    state = "up to date" if version == LATEST_VERSION else f"version {version}, the daemon migrates it to {LATEST_VERSION}"
    if cfg.storage.url is None:
        return f"database {store.where} readable (schema {state})"
    return f"storage {store.where} reachable (schema {state})"


def check_window_shapes(cfg: Config) -> list[str]:
    """One warning per model whose stream state in the store (SQLite: if the state dir
    has a database yet) was built with another window shape than ``cfg`` says."""
    from monitor.service.store import open_store, sqlite_path  # noqa: PLC0415
    from monitor.windows.shape import WindowShape, mismatch_text, mismatches, stored_shapes  # noqa: PLC0415
    from storage.stream import partition_rows  # noqa: PLC0415

    if cfg.storage.url is None and not sqlite_path(cfg).is_file():
        return []
    store = open_store(cfg, readonly=True, application_name="driftwarden check", migrate=False)
    try:
        rows = partition_rows(store, cfg.kafka.predictions_topic)
    finally:
        store.close()
    configured = {m.name: WindowShape.of(m.window) for m in cfg.models}
    return [mismatch_text(x, configured[x.model]) for x in mismatches(stored_shapes(rows), configured)]


def check_kafka(cfg: Config, warnings: list[str] | None = None) -> str:
    """The brokers answer and the predictions topic exists (a missing one is a
    :class:`CheckFailed` naming the key to set). ``warnings`` receives what is
    worth fixing without failing the check: on a shared store, a labels topic whose
    partition count differs from the predictions topic's (the label join is then not
    exact, see README "Scaling out")."""
    from kafka import KafkaConsumer  # noqa: PLC0415

    from monitor.ingest.kafka_client import client_options, closed_on_failure  # noqa: PLC0415

    k = cfg.kafka
    # the check's own time bound, whatever consumer_options.request_timeout_ms says
    consumer = closed_on_failure(KafkaConsumer, {**client_options(cfg), "request_timeout_ms": int(TIMEOUT * 1000) - 1000})
    try:
        topics = consumer.topics()
        if k.predictions_topic not in topics:
            # the likeliest causes: a topic not created yet, or the key left at its default
            raise CheckFailed(
                f"topic {k.predictions_topic!r} not found: create it, or set kafka.predictions_topic"
                " to the topic the models' events go to"
            )
        n = len(consumer.partitions_for_topic(k.predictions_topic) or ())
        # the labels topic is read only for models that join labels
        labelled = cfg.joins_labels
        joined = labelled and k.labels_topic in topics
        n_labels = len(consumer.partitions_for_topic(k.labels_topic) or ()) if joined else None  # type: ignore[arg-type]
    finally:
        consumer.close()
    out = (
        f"kafka {', '.join(k.bootstrap_servers)} ({k.security_protocol}) answers;"
        f" topic {k.predictions_topic!r} has {n} partition{'s' if n != 1 else ''}"
    )
    if labelled and k.labels_topic not in topics:
        # not fatal: predictions are monitored; labels join once the topic exists
        out += f"; labels topic {k.labels_topic!r} not found yet"
    if warnings is not None and cfg.storage.url is not None and n_labels is not None and n_labels != n:
        warnings.append(
            f"labels topic {k.labels_topic!r} has {n_labels} partition{'s' if n_labels != 1 else ''},"
            f" predictions topic {n}: on the shared store each instance joins the labels of the"
            " partitions it holds, so give both the same count (README \"Scaling out\")"
        )
    return out


def check_slack(cfg: Config, name: str, n: SlackNotifierConfig) -> str:
    token = cfg.secret(f"notifiers.{name}.token")
    if not token:
        if not cfg.secret(f"notifiers.{name}.webhook_url"):
            raise ValueError("incoming-webhook URL is empty")
        return f"slack {name}: incoming webhook configured (not posted to)"
    from slack_sdk.errors import SlackApiError  # noqa: PLC0415

    from alerts.notifiers.slack import BoundedWebClient  # noqa: PLC0415

    # the notifier's client: no redirect followed (urllib's followed one to any host with
    # the token in Authorization) and the request bounded as a whole
    client = BoundedWebClient(token=token, base_url=n.base_url, timeout=int(TIMEOUT) - 2, retry_handlers=[])
    try:
        resp = client.auth_test()
    except SlackApiError as exc:
        status = exc.response.status_code
        http_status = "" if status == 200 else f"HTTP {status}: "  # a redirect, say
        raise ConnectionError(
            f"auth.test refused: {http_status}{exc.response.get('error', 'unknown error')}"
        ) from None
    team = resp.get("team") or "?"
    return (
        f"slack {name}: auth.test ok (team {team}, {_host_port(n.base_url)}), channel {n.channel}"
    )


def check_webhook(name: str, n: WebhookNotifierConfig) -> str:
    u = urlsplit(n.url)
    port = u.port or (443 if u.scheme == "https" else 80)
    with socket.create_connection((u.hostname or "", port), timeout=TIMEOUT / 2):
        pass
    return f"webhook {name} ({n.kind}): {u.hostname}:{port} accepts connections (nothing sent)"


def check_references(cfg: Config, warnings: list[str] | None = None, *, calibrate: bool = True) -> list[str]:
    """Load and validate every model's reference file, as ``run`` would at start-up.

    Returns one ``model: N rows`` summary per model; raises ``ReferenceError`` naming
    the file and the column for the first unfit reference (the CLI exits 2).
    ``warnings`` receives what is worth fixing without failing: a calibrated model whose
    ``drift.alpha`` its columns cannot reach or a column whose calibrated threshold its
    reference breaks (a heavy tail under Wasserstein, rare values under chi-square; the
    daemon logs the same WARNINGs at start-up; calibrating takes about 1 s per 10
    columns; ``calibrate=False`` skips this), a reference lacking the label column
    ``models.label`` names (no label figures; the daemon warns too), and every WARNING
    loading a reference logs (e.g. a CSV column of whole numbers written as decimals,
    ``1.0``, which is read as that text).
    """
    from monitor.ingest.schema import ModelSchema  # noqa: PLC0415
    from monitor.references.load import ReferenceSpec, load_reference  # noqa: PLC0415
    from monitor.windows.figures import PreparedModel  # noqa: PLC0415

    out = []
    for m in cfg.models:
        with logged_warnings("driftwarden.references", warnings):  # e.g. a CSV column of 1.0, 2.0
            ref = load_reference(m.reference, ReferenceSpec.from_config(m))
        out.append(f"{m.name} {ref.rows} rows")
        if calibrate and warnings is not None and m.drift.thresholds == "calibrated":
            # the column calibration only (the domain classifier's says nothing of alpha)
            plain = m.model_copy(update={"drift": m.drift.model_copy(update={"multivariate": "none"})})
            pm = PreparedModel.build(plain, ModelSchema.from_config(m), ref)
            text = pm.alpha_warning()
            if text:
                warnings.append(text)
            warnings.extend(pm.limit_warnings())  # columns whose thresholds the reference breaks
    if cfg.joins_labels:
        # rules on figures the references cannot give (label drift, estimates, relative
        # performance): `run` refuses them at start-up, so `check` says so first
        from monitor.labels.reference import prepare_labelled_reference  # noqa: PLC0415
        from monitor.service.pipeline import check_label_rules  # noqa: PLC0415

        labelled = {m.name: prepare_labelled_reference(m, m.reference)
                    for m in cfg.models if m.performance.enabled}
        check_label_rules(cfg, labelled)
        if warnings is not None:  # a label column the config names but the file lacks
            warnings.extend(lr.warning for lr in labelled.values() if lr.warning)
    return out


def _outcome(fn: Callable[[], str]) -> tuple[str, Exception | None]:
    try:
        return _bounded(fn), None
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        return "", exc


def run_checks(
    cfg: Config, echo: Callable[[str], Any], references: list[str] | None = None, *, reachability_fatal: bool = True,
    reference_warnings: list[str] | None = None,
) -> int:
    """Print one line per check; return the exit status: 0 when every check that counts
    passed, 2 when one this host decides failed (the state dir, the SQLite database), 1
    for any other failure.

    ``references``: summaries from :func:`check_references`, shown on the config line;
    ``reference_warnings``: its warnings, one ``!`` line each (not fatal).
    ``reachability_fatal=False``: Kafka, Slack and webhook failures are printed with
    ``!`` and do not count (a store migrated by a newer version still does)."""
    from storage.db import SchemaTooNew  # noqa: PLC0415

    secrets = sorted(
        (s.get_secret_value() for s in cfg.secrets.values() if s.get_secret_value()),
        key=len,
        reverse=True,
    )
    ok_all = True

    def line(ok: bool, text: str, mark: str | None = None) -> None:
        echo(redact(f"{mark or (OK if ok else FAIL)} {text}", secrets))

    refs = f"; reference(s): {', '.join(references)}" if references else ""
    line(
        True,
        f"config: {len(cfg.models)} model(s), {len(cfg.rules)} rule(s), {len(cfg.notifiers)} notifier(s)"
        + refs,
    )
    for warning in cfg.warnings:  # worth fixing, not failing (a secret file every user can read)
        line(True, warning, WARN)
    for warning in reference_warnings or []:  # a drift.alpha the columns cannot reach
        line(True, warning, WARN)
    # what this host decides: a failure here is exit status 2, as for the config
    local: list[tuple[str, Callable[[], str]]] = [("state dir", lambda: check_state_dir(cfg))]
    if cfg.storage.url is None:
        local.append(("database", lambda: check_storage(cfg)))
    free, text = check_listen(cfg)
    # in use now (this daemon already running?): a warning. Never bindable here: a failure
    # even before start (this host decides it), exit 1 as `run` gives for it
    listen_failed = free is None
    line(not listen_failed, text, None if free or listen_failed else WARN)
    kafka_warnings: list[str] = []
    checks: list[tuple[str, Callable[[], str]]] = [("kafka", lambda: check_kafka(cfg, kafka_warnings))]
    if cfg.storage.url is not None:
        checks.insert(0, ("storage", lambda: check_storage(cfg)))
    for name, n in cfg.notifiers.items():
        if isinstance(n, SlackNotifierConfig):
            checks.append((f"slack {name}", functools.partial(check_slack, cfg, name, n)))
        elif isinstance(n, WebhookNotifierConfig):
            checks.append((f"webhook {name}", functools.partial(check_webhook, name, n)))
    local_failed = False
    for label, fn in local:
        if local_failed:  # no database to read in a state dir that failed
            break
        try:
            line(True, _bounded(fn, timeout=max(TIMEOUT, 60.0)))  # a large reference takes a while
        except Exception as exc:  # noqa: BLE001 - each failure is one report line
            local_failed = True
            line(False, f"{label}: {_reason(exc)}")
    # the remote checks wait on the network: run them side by side, report in order
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        outcomes = [pool.submit(_outcome, fn) for _, fn in checks]
    for (label, _), fut in zip(checks, outcomes, strict=True):
        text, exc = fut.result()
        if exc is None:
            line(True, text)
            if label == "kafka":
                for warning in kafka_warnings:
                    line(True, warning, WARN)
        else:
            reason = _reason(exc)
            if label == "kafka":  # the address tried: a typo in it is the likeliest cause
                reason += f"; kafka.bootstrap_servers = {', '.join(cfg.kafka.bootstrap_servers)}" \
                          f" ({cfg.kafka.security_protocol})"
            if reachability_fatal or isinstance(exc, SchemaTooNew):  # not a matter of waiting
                ok_all = False
                line(False, f"{label}: {reason}")
            else:
                line(False, f"{label}: {reason} (not fatal before start: the daemon retries)", WARN)
    try:  # a difference is worth knowing, not a failure (a rolling config change passes through it)
        for warning in ([] if local_failed else _bounded(lambda: check_window_shapes(cfg))):
            line(True, warning, WARN)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        line(True, f"window shapes of the stored stream state not checked: {_reason(exc)}", WARN)
    return 2 if local_failed else 0 if ok_all and not listen_failed else 1
