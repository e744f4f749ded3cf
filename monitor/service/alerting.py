"""Wiring ``alerts`` into the daemon: config -> rules, notifiers, engine, outbox worker.

The pipeline calls :meth:`Alerting.on_window` inside its flush transaction, so a
window's figures, the alert transitions they cause and their outbox rows commit
together, and :meth:`Alerting.flush_outcome` once it knows whether that transaction
committed (which, when its COMMIT raised, it learns later); the scheduler calls
:meth:`deliver_due` and :meth:`tick`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from alerts.engine import AlertEngine, AlertSettings
from alerts.outbox import DeliveryWorker, RetryPolicy
from alerts.payloads import WindowContext
from alerts.rules import DetectorSpec, Rule
from monitor.config import (
    Config,
    CusumConfig,
    ModelConfig,
    PageHinkleyConfig,
    RuleConfig,
    SlackNotifierConfig,
    WebhookNotifierConfig,
)
from monitor.service.peers import rule_digests
from monitor.service.telemetry import log_transitions
from monitor.windows.figures import WindowFigures
from storage.db import Store
from storage.records import MetricRow, WindowKey, WindowRecord, window_url_id

log = logging.getLogger("driftwarden.alerting")


def detector_from_config(r: RuleConfig) -> DetectorSpec | None:
    """The rule's change detector (None without one); config names -> constructor names."""
    d = r.detector
    if d is None:
        return None
    if isinstance(d, CusumConfig):
        params = {"k": d.k, "h": d.h, "target": d.target, "sigma": d.sigma, "min_instances": d.warmup}
        return DetectorSpec("cusum", tuple(params.items()))
    assert isinstance(d, PageHinkleyConfig)
    params = {"delta": d.delta, "threshold": d.threshold, "alpha": d.alpha, "min_instances": d.warmup}
    return DetectorSpec("page_hinkley", tuple(params.items()))


def rule_from_config(r: RuleConfig) -> Rule:
    return Rule(
        name=r.name, metric=r.metric, op=r.op, threshold=r.threshold, model=r.model, column=r.column,
        segment=r.segment, version=r.version, relative=r.relative, for_windows=r.for_,
        resolve_after=r.resolve_after, severity=r.severity, labels=dict(r.labels),
        notifiers=tuple(r.notifiers), repeat_interval=r.repeat_interval, no_data_for=r.no_data_for,
        detector=detector_from_config(r),
    )


def build_notifiers(config: Config) -> dict[str, Any]:
    """Notifier objects by name, secrets taken from ``config.secrets``."""
    out: dict[str, Any] = {}
    for name, n in config.notifiers.items():
        timeout = n.timeout.total_seconds()
        if isinstance(n, SlackNotifierConfig):
            from alerts.notifiers.slack import SlackNotifier  # noqa: PLC0415

            token = config.secret(f"notifiers.{name}.token")
            if token:
                out[name] = SlackNotifier(name, token, n.channel or "", base_url=n.base_url, timeout=timeout)
            else:
                out[name] = SlackNotifier.from_webhook_url(
                    name, config.secret(f"notifiers.{name}.webhook_url") or "", timeout=timeout
                )
        elif isinstance(n, WebhookNotifierConfig):
            from alerts.notifiers.webhook import WebhookNotifier  # noqa: PLC0415

            out[name] = WebhookNotifier(
                name, n.url, config.secret(f"notifiers.{name}.secret"), kind=n.kind, cooldown=n.cooldown,
                timeout=timeout,
            )
    return out


class Alerting:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Callable[[], datetime],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        owner: str | None = None,
        delivery_clock: Callable[[], datetime] | None = None,
        reminders: bool = True,
    ) -> None:
        """``clock`` times the alerts; ``delivery_clock`` (default: ``clock``) the outbox's
        attempts and back-offs (a replay: alerts at event time, deliveries at the wall clock).
        ``reminders`` False: reminders are made but not queued (a replay of history;
        :attr:`alerts.engine.AlertSettings.reminders`)."""
        self.config = config
        self.clock = clock
        self.on_event = on_event or (lambda kind, data: None)
        self.notifiers = build_notifiers(config)
        self.engine = AlertEngine(
            store,
            [rule_from_config(r) for r in config.rules],
            notifiers=self.notifiers,
            clock=clock,
            settings=AlertSettings(
                repeat_interval=config.alerting.repeat_interval,
                group_by=tuple("alertname" if g == "rule" else g for g in config.alerting.group_by),
                reminders=reminders,
                models=frozenset(m.name for m in config.models),
            ),
            owner=owner,
        )
        self.engine.rule_digests = rule_digests(config)
        self.worker = DeliveryWorker(
            store,
            self.notifiers,
            delivery_clock or clock,
            policies={
                name: RetryPolicy(n.max_attempts, n.backoff.total_seconds(), n.max_backoff.total_seconds())
                for name, n in config.notifiers.items()
            },
            owner=owner,
        )
        self._deliver_lock = threading.Lock()
        #: set when a window caused transitions: deliveries to send after the commit
        self._wake = threading.Event()
        #: transitions of the flush in progress (or whose COMMIT raised), logged once it commits
        self._uncommitted: list[Any] = []

    def on_window(self, figures: WindowFigures, model: ModelConfig) -> None:
        base = self.config.daemon.base_url
        rec = figures.record
        by_count = model.window.by == "count" and figures.ts_range is not None
        ctx = WindowContext(
            reference_metrics=figures.reference_metrics,
            drifted_columns=figures.top_drifted,
            data={
                "topic": self.config.kafka.predictions_topic,
                "from": figures.ts_range[0] if figures.ts_range else rec.key.start,
                "to": figures.ts_range[1] if figures.ts_range else rec.key.end,
            },
            links={
                "api": f"{base}/api/v1/models/{model.name}/windows?metrics=1",
                "report": f"{base}/api/v1/models/{model.name}/windows/{window_url_id(rec.id)}/report",
            },
            callback=f"{base}/api/v1/models/{model.name}/references",
            rows=rec.rows,
            # count windows are identified by row ordinals: show people their time range
            start=figures.ts_range[0] if by_count and figures.ts_range else "",
            end=figures.ts_range[1] if by_count and figures.ts_range else "",
        )
        self.engine.observe_model_activity(model.name, self.clock())
        # the pipeline's savepoint of this window rolls back when anything here raises: what
        # the rules saw of their slots goes with it (the engine's own covers its call only)
        with self.engine.memory_savepoint():
            transitions = self.engine.on_window(rec, figures.metrics, context=ctx)
            self._made(transitions)

    def finish_slots(self) -> None:
        """The end of a flush's windows (``Pipeline.after_windows``, in its transaction):
        the rules without ``version`` judge the time slots some version had no window in
        (:meth:`alerts.engine.AlertEngine.finish_slots`)."""
        self._made(self.engine.finish_slots())

    def _made(self, transitions: list[Any]) -> None:
        """Transitions made inside the flush transaction: logged, and their notifications
        sent, once it commits (:meth:`deliver_after_commit`)."""
        for t in transitions:
            self.on_event("transition", {"transition": t})
        if transitions:
            self._uncommitted.extend(transitions)
            self._wake.set()

    def forget_uncommitted(self) -> None:
        """The flush failed (rolled back): its transitions did not happen; they are made
        again when the flush is retried."""
        self._uncommitted.clear()
        self._wake.clear()

    def flush_outcome(self, committed: bool) -> None:
        """The pipeline found out how a flush attempt ended (``Pipeline.on_outcome``):
        committed, its transitions are logged (their notifications are in the outbox,
        sent by :meth:`deliver_after_commit` or the next scheduler run); rolled back,
        they are forgotten (the flush, written again, makes them again). A flush whose
        COMMIT raised keeps its transitions until then: it may have committed, and
        written again it would not make them again (each window is judged once)."""
        self.engine.flush_outcome(committed)  # its memory of time slots goes with the flush
        if not committed:
            self.forget_uncommitted()
        elif self._uncommitted:
            done, self._uncommitted = self._uncommitted, []
            log_transitions(done)

    def deliver_after_commit(self) -> None:
        """Called right after the flush transaction commits: log the alert transitions it
        made, and if there were any, their notifications are in the outbox now; start
        sending them at once instead of waiting for the next scheduler run (alert latency)."""
        if self._uncommitted:
            done, self._uncommitted = self._uncommitted, []
            log_transitions(done)
        if self._wake.is_set():
            self._wake.clear()
            self.deliver_due()

    def on_performance(
        self, key: WindowKey, metrics: list[MetricRow], model: ModelConfig,
        reference: Mapping[tuple[str, str], float],
    ) -> None:
        """A performance window was (re)computed: rules judge it again (see
        :meth:`alerts.engine.AlertEngine.on_window`, ``reevaluate``)."""
        base = self.config.daemon.base_url
        labelled = next((m.value for m in metrics if m.metric == "labelled_rows"), 0.0) or 0.0
        rec = WindowRecord(key=key, rows=int(labelled), status="ok", computed_at=self.clock())
        ctx = WindowContext(
            reference_metrics=reference,
            data={"topic": self.config.kafka.labels_topic or "", "from": key.start, "to": key.end},
            links={
                "api": f"{base}/api/v1/models/{model.name}/windows?metrics=1",
                "report": f"{base}/api/v1/models/{model.name}/windows/{window_url_id(rec.id)}/report",
            },
            callback=f"{base}/api/v1/models/{model.name}/references",
            rows=rec.rows,
        )
        with self.engine.memory_savepoint():
            transitions = self.engine.on_window(rec, metrics, context=ctx, reevaluate=True)
            self._made(transitions)

    def deliver_due(self) -> int:
        """Start sending what is due, one lane per notifier (see :mod:`alerts.outbox`),
        without waiting for the receivers: a slow one holds only its own lane.
        Returns how many lanes were started; never raises into the scheduler."""
        if not self._deliver_lock.acquire(blocking=False):
            return 0
        try:
            return len(self.worker.dispatch())
        except Exception as exc:  # noqa: BLE001
            log.error("outbox run failed: %s", exc)
            return 0
        finally:
            self._deliver_lock.release()

    def send_due(self, timeout: float | None = None) -> int:
        """Send what is due and wait for the lanes to finish, at most ``timeout`` seconds
        (None: however long): for a batch run (``replay``) that closes the store afterwards,
        so no request should still be in flight or unrecorded then. Returns the number of
        requests the finished lanes made, whatever their outcome (retries later due are not
        waited for). A storage error while dispatching propagates; one inside a lane is
        logged and rests that lane."""
        with self._deliver_lock:
            return self.worker.run_once(timeout)

    def drain(self, timeout: float) -> bool:
        """At shutdown: start what is due, give the lanes at most ``timeout`` seconds,
        then stop them after their current request (what is left stays pending
        and is sent after the next start). Returns whether all lanes finished."""
        self.deliver_due()
        idle = self.worker.close(timeout)
        if not idle:
            log.warning("outbox: receivers still busy at shutdown; their deliveries stay pending")
        return idle

    def drain_timeout(self) -> float:
        """Seconds a shutdown waits for the outbox: one request per notifier
        (the longest ``timeout``), at most half of ``daemon.shutdown_timeout``."""
        longest = max((n.timeout.total_seconds() for n in self.config.notifiers.values()), default=0.0)
        return min(longest + 1.0, self.config.daemon.shutdown_timeout.total_seconds() / 2)

    def tick(self) -> None:
        try:
            transitions = self.engine.on_tick(self.clock())
        except Exception as exc:  # noqa: BLE001
            log.error("alert tick failed: %s", exc)
            return
        log_transitions(transitions)

    def silence(self, **kwargs: Any) -> str:
        return self.engine.silence(**kwargs)
