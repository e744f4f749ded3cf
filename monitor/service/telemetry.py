"""The log lines that tell the story, and the window compute-time histogram.

One INFO line per stored window (after its flush commits), per alert transition
(after it commits), per delivery outcome (``alerts.outbox``), and a summary at
start-up and at shutdown. Each line carries its facts twice: readable in the
message, and as ``extra=`` fields (``event``, ``model``, ...) that the JSON log
format keeps as keys. Values that come from the stream (versions, segment
values) are shown with control characters escaped and cut to
:data:`storage.text.MAX_LOG_TEXT` characters (:func:`storage.text.log_text`), so a
producer cannot forge log lines.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.windows.figures import WindowFigures
from storage.records import DATASET
from storage.scores import score_text
from storage.text import log_text

log = logging.getLogger("driftwarden.story")

#: longest stream value shown in a log line (characters)
#: drifted columns named in a window's line
TOP_COLUMNS = 5

#: upper bounds (seconds) of the window compute-time histogram
COMPUTE_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# -- the compute-time histogram -------------------------------------------------------------


@dataclass
class ComputeHistogram:
    """Seconds spent computing each window's figures, per model (Prometheus buckets).

    Written by the consumer thread, read by ``/metrics``: both under one lock.
    """

    buckets: tuple[float, ...] = COMPUTE_BUCKETS
    #: model -> (count per bucket, the last one for +Inf; sum of seconds)
    _data: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, model: str, seconds: float) -> None:
        with self._lock:
            counts, total = self._data.get(model) or ([0] * (len(self.buckets) + 1), 0.0)
            counts[bisect_left(self.buckets, seconds)] += 1
            self._data[model] = (counts, total + seconds)

    def snapshot(self) -> dict[str, tuple[list[tuple[str, int]], float]]:
        """Per model: cumulative ``(le, count)`` pairs ending with ``+Inf``, and the sum."""
        out: dict[str, tuple[list[tuple[str, int]], float]] = {}
        with self._lock:
            for model, (counts, total) in self._data.items():
                running, pairs = 0, []
                for le, n in zip([*map(repr, self.buckets), "+Inf"], counts, strict=True):
                    running += n
                    pairs.append((le, running))
                out[model] = (pairs, total)
        return out

    def copy(self) -> ComputeHistogram:
        with self._lock:
            return ComputeHistogram(self.buckets, {m: (list(c), t) for m, (c, t) in self._data.items()})


# -- windows ---------------------------------------------------------------------------


def verdict(figs: WindowFigures) -> str:
    """``drifted`` / ``stable`` for a judged window, else its status (``insufficient``, ``error``)."""
    if figs.record.status != "ok":
        return figs.record.status
    for m in figs.metrics:
        if m.column == DATASET and m.metric == "drift_share":
            return "drifted" if m.drifted else "stable"
    return "ok"


def log_windows_stored(figures: Iterable[WindowFigures]) -> None:
    """One INFO line per window just made durable (called after the flush commits)."""
    for figs in figures:
        try:
            log_window(figs)
        except Exception:  # noqa: BLE001 - a log line must never fail a flush that committed
            log.exception("cannot log window %s", log_text(figs.record.id))


def log_window(figs: WindowFigures) -> None:
    rec = figs.record
    k = rec.key
    share = next((m for m in figs.metrics if m.column == DATASET and m.metric == "drift_share"), None)
    top = [(c, t, s) for c, t, s in figs.top_drifted[:TOP_COLUMNS]]
    drifted_text = ", ".join(f"{log_text(c)} ({score_text(t, s)})" for c, t, s in top) or "none"
    extra_n = max(len(figs.top_drifted) - TOP_COLUMNS, 0)
    if extra_n:
        drifted_text += f" and {extra_n} more"
    v = verdict(figs)
    share_text = ""
    if share is not None and share.value is not None:
        share_text = f" drift_share={share.value:.3g}" + ("" if share.threshold is None else f"/{share.threshold:.3g}")
    log.info(
        "window closed: model=%s version=%s segment=%s %s..%s rows=%d verdict=%s%s drifted=[%s] compute_ms=%.1f",
        log_text(k.model), log_text(k.version) or '""', log_text(k.segment) or "(all)", k.start, k.end, rec.rows, v,
        share_text, drifted_text, figs.compute_seconds * 1000,
        extra={
            "event": "window_closed", "model": k.model, "version": k.version, "segment": k.segment,
            "window_id": rec.id, "start": k.start, "end": k.end, "rows": rec.rows, "status": rec.status,
            "verdict": v, "drift_share": None if share is None else share.value,
            "drift_share_threshold": None if share is None else share.threshold,
            "drifted_columns": [{"column": c, "test": t, "score": s} for c, t, s in figs.top_drifted],
            "compute_ms": round(figs.compute_seconds * 1000, 3), "reference": rec.reference,
            **({"error": rec.error} if rec.error else {}),
        },
    )


# -- alerts ------------------------------------------------------------------------------


def log_transitions(transitions: Iterable[Any]) -> None:
    """One INFO line per alert transition (``alerts.engine.Transition``) that committed."""
    for t in transitions:
        try:
            log_transition(t)
        except Exception:  # noqa: BLE001
            log.exception("cannot log an alert transition")


def log_transition(t: Any) -> None:
    labels: Mapping[str, str] = t.labels or {}
    where = " ".join(f"{k}={log_text(v)}" for k, v in sorted(labels.items()) if k not in ("alertname", "model") and v)
    value = "n/a" if t.value is None else f"{t.value:.4g}"
    threshold = "n/a" if t.threshold is None else f"{t.threshold:.4g}"
    sent = ",".join(t.notifiers) or "nobody"
    muted = f" ({t.muted})" if t.muted else ""
    log.info(
        "alert %s: rule=%s model=%s%s value=%s threshold=%s %s->%s notify=%s%s",
        t.event, log_text(t.rule), log_text(t.model), f" {where}" if where else "", value, threshold,
        t.from_state, t.to_state, sent, muted,
        extra={
            "event": "alert_transition", "alert_id": t.alert_id, "rule": t.rule, "model": t.model,
            "labels": dict(labels), "transition": t.event, "from_state": t.from_state, "to_state": t.to_state,
            "value": t.value, "threshold": t.threshold, "window_id": t.window_id,
            "notifiers": list(t.notifiers), "muted": t.muted,
        },
    )


# -- consumer lag -------------------------------------------------------------------------


def consumer_lag(consumer: Any, positions: Mapping[str, Mapping[int, int]]) -> dict[tuple[str, int], int]:
    """Per assigned (topic, partition) of the topics in ``positions``: messages between the
    next offset the pipeline consumes there and the partition's highwater as last reported
    by the broker in a fetch response (no request is made; a partition not fetched yet, or
    not consumed, is left out). Never negative; ``{}`` without a consumer or when the
    client's state is unreadable."""
    if consumer is None:
        return {}
    out: dict[tuple[str, int], int] = {}
    try:
        for tp in list(consumer.assignment() or ()):
            of_topic = positions.get(tp.topic)
            position = None if of_topic is None else of_topic.get(tp.partition)
            high = None if position is None else consumer.highwater(tp)
            if high is not None and position is not None:
                out[(tp.topic, tp.partition)] = max(int(high) - int(position), 0)
    except Exception:  # noqa: BLE001 - a rebalance in progress (partition unassigned meanwhile)
        return out
    return out


def package_version() -> str:
    """The installed driftwarden's version (``0+unknown`` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("driftwarden")
    except PackageNotFoundError:
        return "0+unknown"


# -- start-up and shutdown ------------------------------------------------------------------


def log_startup(daemon: Any, *, version: str, resumed_partitions: int) -> None:
    """What this daemon watches and where it listens, in one line (plus a warning when links
    in notifications would point at the loopback address)."""
    cfg = daemon.config
    models = []
    for name, rt in daemon.pipeline.models.items():
        w = rt.config.window
        size = w.size if w.by == "count" else _short(w.size)
        models.append({
            "name": name, "window": f"{w.type} {size}", "reference_rows": rt.prepared.reference.rows,
            "reference_mode": rt.config.reference_mode, "open_windows": len(rt.windows.open),
        })
    text = ", ".join(f"{m['name']} ({m['window']}, {m['reference_mode']} reference of {m['reference_rows']} rows)"
                     for m in models)
    log.info(
        "driftwarden %s starting: %d model(s): %s; %d rule(s); notifiers: %s; http %s; state %s;"
        " %d open window(s) to refill from %d partition(s)",
        version, len(models), text, len(cfg.rules), ", ".join(sorted(cfg.notifiers)) or "none",
        cfg.daemon.http_listen, cfg.daemon.state_dir, sum(m["open_windows"] for m in models), resumed_partitions,
        extra={
            "event": "startup", "version": version, "models": models, "rules": len(cfg.rules),
            "notifiers": sorted(cfg.notifiers), "http_listen": cfg.daemon.http_listen,
            "public_url": cfg.daemon.base_url, "state_dir": str(cfg.daemon.state_dir),
            "topic": cfg.kafka.predictions_topic, "group_id": cfg.kafka.group_id,
        },
    )
    if cfg.notifiers and cfg.daemon.public_url is None:
        log.warning(
            "daemon.public_url is not set: links in notifications (reports, API, retraining callback)"
            " point at %s, which works on this machine only",
            cfg.daemon.base_url, extra={"event": "config_warning", "key": "daemon.public_url"},
        )


def log_shutdown(daemon: Any, *, uptime_s: float) -> None:
    """What this run did, in one line, as the daemon stops."""
    st = daemon.pipeline.stats
    dead = sum(st.dead_letters.values())
    log.info(
        "driftwarden stopped after %s: %d rows, %d windows stored (%d with errors), %d late rows,"
        " %d dead letters",
        _short_seconds(uptime_s), st.rows, st.windows_closed, st.window_errors, st.late_rows, dead,
        extra={
            "event": "shutdown", "uptime_s": round(uptime_s, 3), "rows": st.rows,
            "windows_closed": st.windows_closed, "window_errors": st.window_errors,
            "late_rows": st.late_rows, "dead_letters": dict(st.dead_letters),
        },
    )


def _short(td: Any) -> str:
    return _short_seconds(td.total_seconds())


def _short_seconds(s: float) -> str:
    s = int(round(s))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
