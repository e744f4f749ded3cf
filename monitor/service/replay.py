"""``driftwarden replay -c FILE DATA``: the live pipeline over a file, for backfills and
for trying thresholds on history.

The same :class:`~monitor.service.pipeline.Pipeline` (windows, figures, one transaction per
flush), the same rules and alert engine, into a state directory of its own: the tables
equal those of a live run over the same records in the same order (tested). At the end
of the file every window still open is closed, as the live daemon's idle tick closes
them once the stream goes quiet. Notifications are off unless ``notify``: the rules
still fire and resolve (the ``alerts`` table shows what would have been sent), but no
notifier is wired, so nothing is queued or sent; with ``notify`` the outbox is delivered
as the replay goes and drained at the end. Reminders are never sent: nobody needs
reminding of the past (a month of history with an alert firing throughout would send one
per ``repeat_interval`` of event time, ~180 at 4 h, within seconds: a live incident storm
to whoever reads the channel), and no daemon continues a replay's folder, so one for an
alert still firing at the end would only repeat the firing notification just sent. They
still fall due and count as made (``last_notified_at`` moves, as live: the ``alerts``
table is a live run's), and :attr:`ReplayResult.reminders_not_sent` counts them.

Time is event time: a window is stamped (``computed_at``) and judged at the time a live
daemon fed the stream as it happened would have judged it (a time window at its end plus
``lateness``, a count window at its last row's time; never before a window judged
earlier), so an alert's ``started_at``, ``fired_at``, ``resolved_at`` and its deliveries'
times say when it would have happened. ``for`` and ``resolve_after`` count windows, as
live. The alert ticks (no-data rules, their resolution, reminders) run at the event times
they fall due between windows, never past the last one: a gap in the file fires a no-data
rule, the end of the file does not. What is not event time: event times are judged
against the replay's start (``kafka.max_future_skew``) and move the watermark no further
than it (a file's rows have no record timestamp: see
:func:`monitor.ingest.event_time.watermark_times`; windows of rows stamped ahead of the
start close at the end of the file), nor further than a second row vouches for
(:func:`monitor.ingest.event_time.vouch`: one row of a history file stamped in the future
makes no row after it late), and the outbox (with ``notify``) sends and retries
by it. Silences live in a daemon's store, never in a replay's.

With ``--labels`` a file of label events goes through the live label join, merged with
the predictions in event time (:func:`monitor.service.replay_source.merged`). The join's
part of each flush runs at the join's clock (:meth:`_EventClock.label_time`: event time),
so performance windows mature (``labels.delay``, ``coverage``), are stamped, judged and
recomputed (``recompute_interval``) in event time; its share of the time is not capped
(``compute_share``: no live stream waits) and a flush that left slots due is followed by
another at once. At the end of the files every slot still owed is computed
(:meth:`monitor.labels.join.LabelJoin.finish`): the figures are those of all the labels.

Deterministic: the same files and config give the same windows, figures and alerts,
timestamps included.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.config import Config
from monitor.service.replay_source import ReplaySource, merged
from monitor.service.telemetry import log_transitions
from storage.db import DB_FILENAME, StorageError
from storage.records import parse_iso
from storage.state_dir import (
    DIR_MODE,
    FILE_MODE,
    LOCK_FILENAME,
    REPLAY_MARKER,
    StateDirError,
    StateDirLock,
    lock_state_dir,
)

log = logging.getLogger("driftwarden.replay")

#: where a replay writes its tables until it finishes (then renamed to the database)
PARTIAL_DB = "driftwarden.db.partial"


class ReplayError(Exception):
    """The replay cannot start; the message says what to fix."""


class ReplayInterrupted(Exception):
    """The replay was stopped (Ctrl-C, SIGTERM) before the end of the file: nothing it
    wrote was kept; the folder holds what it held before."""

    def __init__(self, rows: int, state_dir: Path) -> None:
        super().__init__(
            f"replay interrupted after {rows} rows: nothing of it was kept; {state_dir} holds what it held"
            " before (an earlier replay's tables, or none)"
        )
        self.rows = rows


@dataclass
class ReplayResult:
    rows: int
    windows: int
    late_rows: int
    dead_letters: int
    alerts_fired: int
    deliveries_sent: int
    state_dir: Path
    #: with ``notify``: deliveries left for a retry (failed, timed out) and refused for good
    #: (``dead``), as the replay's own outbox holds them at the end
    deliveries_pending: int = 0
    deliveries_dead: int = 0
    #: with ``notify``: reminders of firing alerts that fell due in the history and were not
    #: sent (a replay sends firing and resolved notifications only; see the module doc)
    reminders_not_sent: int = 0
    #: with ``labels``: the label file's rows read (blank JSON lines aside), the labels
    #: that labelled a prediction (the join's ``joined`` counter), the rows dead-lettered
    labels_read: int = 0
    labels_joined: int = 0
    label_dead_letters: int = 0
    #: label rows stamped more than ``labels.ttl`` before a label above them in the file:
    #: the file is read in its order, so their predictions had likely left the join (an
    #: unsorted file; :attr:`ReplaySource.behind_ttl`)
    labels_out_of_order: int = 0


class _Clock:
    """A clock that stands still unless moved (the idle close at the end moves it): the
    pipeline's wall clock (event times are judged against it, ``kafka.max_future_skew``)
    and the outbox's."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class _EventClock:
    """The replay's clock of windows and alerts: event time, never going backwards.

    A window is stamped (``computed_at``) and judged at the time a live daemon fed the
    stream as it happened would have judged it: a time window at its end plus
    ``lateness``, a count window at its last row's time (or later, never before a window
    judged earlier). Before a window is judged, the alert ticks due in between run at
    their own times (:meth:`alerts.engine.AlertEngine.tick_due`: no-data rules, their
    resolution, reminders), as the live daemon's ticks would have; none runs past the
    last window (the end of the file is not the stream going quiet).
    """

    def __init__(self, placeholder: datetime) -> None:
        #: the time of the last window stamped (the pipeline's side)
        self.windows: datetime | None = None
        #: the alert engine's time (the last window judged, or the last tick)
        self.now: datetime | None = None
        self._placeholder = placeholder  # before the first window (the engine's construction)
        self.engine: Any = None
        #: the label join (``--labels``), whose clock :meth:`label_time` reads
        self.join: Any = None
        #: the time of the label join's last flush (:meth:`label_time`)
        self.labels_at: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or self._placeholder

    def window_time(self, rt: Any, w: Any, now: datetime) -> datetime:
        """``Pipeline.window_time``: the event time at which window ``w`` closes.

        A count window: its newest row's time, but no later than the model's event clock
        (:attr:`~monitor.windows.model_windows.ModelWindows.max_ts`, the time two rows
        reached): one row stamped in the future would otherwise stamp its window there and,
        as no window is judged before an earlier one, every window after it, and run the
        alert ticks of the whole gap. The clock is read when the window closes (the end of
        the batch that completed it); it lags the newest row only when that row ends the
        batch, by one row. Before the model has a clock (one row so far), its window is
        judged with the one before it (or at the row's time, capped at ``now``)."""
        if rt.config.window.by == "time":
            t = datetime.fromtimestamp(w.end / 1000, UTC) + (rt.config.window.lateness or timedelta(0))
        else:
            ts = w.ts_ms()
            clock = rt.windows.max_ts
            if not len(ts):
                t = self.windows or now
            elif clock is not None:
                t = datetime.fromtimestamp(min(int(ts.max()), clock) / 1000, UTC)
            else:
                t = self.windows or min(now, datetime.fromtimestamp(int(ts.max()) / 1000, UTC))
        self.windows = t if self.windows is None else max(self.windows, t)
        return self.windows

    def before_window(self, figures: Any, model: Any) -> None:
        """``Pipeline.before_window``: the ticks due before the window, then its time."""
        at = figures.record.computed_at
        if self.now is None:  # no-data silences count from the first events of the file
            first = parse_iso(figures.ts_range[0]) if figures.ts_range else at
            self.now = min(first, at)
            self.engine.start_clocks(self.now)
        self.catch_up(at)
        self.now = max(self.now, at)

    def label_time(self) -> datetime:
        """``Pipeline.label_time``: the event time the label join's part of a flush runs at
        (its performance windows are computed and judged then, recomputes paced by it):
        the join's clock, the newest event time two events of either file reached (the
        newest event when only one came; else the last window's time), never going
        backwards. A slot matures by ``labels.delay`` once this clock is past its end plus
        the delay, as live where the join's clock is the same."""
        ms = max(self.join.clock_ms.values(), default=None) if self.join is not None else None
        if ms is None and self.join is not None:
            ms = max(self.join.front_ms.values(), default=None)
        t = datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else (self.windows or self.now or self._placeholder)
        self.labels_at = t if self.labels_at is None else max(self.labels_at, t)
        return self.labels_at

    def before_performance(self) -> None:
        """Before a performance window is judged: the alert ticks due up to the label
        join's time (:meth:`label_time`), then that time (never before a window judged
        earlier): its alerts are stamped when the window matured."""
        at = self.labels_at or self.label_time()
        if self.now is None:
            self.now = at
            self.engine.start_clocks(at)
        self.catch_up(at)
        self.now = max(self.now, at)

    def catch_up(self, until: datetime) -> None:
        """Run the alert ticks due at or before ``until``, each at its own time."""
        if self.now is None:
            return
        last = None
        # each tick later than the last: a tick that changes nothing (a reminder an inhibition
        # holds back stays due) must not stop the ticks due after it
        while (due := self.engine.tick_due(after=last)) is not None and due <= until:
            due = max(due, self.now)
            if last is not None and due <= last:  # cannot happen (due > last >= now): no loop
                break
            self.now = last = due
            try:
                transitions = self.engine.on_tick(due)
            except StorageError:
                raise  # the replay's own file: the replay fails, as for a window it cannot write
            except Exception as exc:  # noqa: BLE001 - as the live alert tick: one failure is logged, not fatal
                log.error("alert tick at %s failed: %s", due.isoformat(), exc)
                return
            log_transitions(transitions)


def claim_replay_dir(state_dir: Path) -> StateDirLock:
    """Take ``state_dir`` for a replay and hold it: new, empty, or an earlier replay's.

    The folder is created 0700 (an existing one narrowed to it), marked with
    :data:`REPLAY_MARKER` (0600), and locked exclusively (:func:`storage.state_dir.lock_state_dir`)
    until the returned lock is released: a daemon never runs on it meanwhile, nor another
    replay. Nothing else in it is touched. Raises :class:`ReplayError` for a file where the
    folder should be, a folder a replay did not make (a daemon's), a folder in use.
    """
    state_dir = Path(state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        raise ReplayError(f"--state-dir {state_dir} is not a folder")
    try:
        state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:  # a file where a parent folder should be, no permission
        raise ReplayError(f"--state-dir {state_dir}: cannot create it: {exc.strerror or exc}") from None
    def refuse_a_daemons_folder() -> None:
        others = [p.name for p in state_dir.iterdir() if p.name not in (LOCK_FILENAME, REPLAY_MARKER)]
        if others and not (state_dir / REPLAY_MARKER).is_file():
            raise ReplayError(
                f"--state-dir {state_dir} holds files a replay did not create (no {REPLAY_MARKER} marker); a replay"
                " never writes into a live daemon's state. Give a new or empty folder"
            )

    # before the lock file is made: a replay refused on a daemon's folder (by root, say)
    # must leave nothing there the daemon's user could not open
    refuse_a_daemons_folder()
    try:
        lock = lock_state_dir(state_dir, exclusive=True)
    except StateDirError as exc:
        raise ReplayError(f"--state-dir {exc}") from None
    try:
        refuse_a_daemons_folder()  # again, under the lock
        if stat.S_IMODE(state_dir.stat().st_mode) & 0o077:
            state_dir.chmod(DIR_MODE)
        fd = os.open(state_dir / REPLAY_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write("created by `driftwarden replay`; a new replay rewrites this folder\n")
    except BaseException:
        lock.release()
        raise
    return lock


def _db_files(db: Path) -> list[Path]:
    """A SQLite database file and its WAL companions."""
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def _install(partial: Path, db: Path) -> None:
    """Put the finished replay's database (closed: no WAL left) in place of the last one.
    The old WAL files go first: left beside the new file, SQLite would apply them to it."""
    for companion in _db_files(db)[1:]:
        companion.unlink(missing_ok=True)
    os.replace(partial, db)


def unlabelled_note(config: Config) -> str | None:
    """What a replay without ``--labels`` cannot give, said before it runs: a file's rows
    are predictions, never labels (a ``label`` field in them is not read), so the
    performance windows of a model with ``[models.performance] enabled`` stay unlabelled
    and a rule on a figure that needs labels (:func:`monitor.metric_names.needs_labels`:
    ``accuracy``, ``accuracy_worse_p``, ...) never fires in it. ``None`` when no model
    joins labels. With ``--labels`` the CLI does not say it."""
    from monitor.metric_names import needs_labels  # noqa: PLC0415

    joined = [m.name for m in config.models if m.performance.enabled]
    if not joined:
        return None
    rules = [r.name for r in config.rules
             if needs_labels(r.metric) and (r.model is None or r.model in joined)]
    note = (f"labels are not replayed (a file's rows are predictions; a label field in them is not read):"
            f" the performance figures of model(s) {', '.join(joined)} stay unlabelled")
    if rules:
        note += f", so rule(s) {', '.join(rules)} cannot fire in this replay"
    return (note + "; drift, quality and estimated_* figures come from the predictions and are replayed;"
            " --labels FILE replays a file of label events")


def replay_config(config: Config, state_dir: Path, *, notify: bool, labels_topic: str | None = None) -> Config:
    """The config a replay runs with: its own state dir; without ``notify``, no notifiers;
    with ``labels_topic`` (``--labels``), that as the labels topic (the label file's
    records and dead letters carry it), whatever the config's."""
    daemon = config.daemon.model_copy(update={"state_dir": Path(state_dir)})
    update: dict[str, Any] = {"daemon": daemon}
    if labels_topic is not None:
        update["kafka"] = config.kafka.model_copy(update={"labels_topic": labels_topic})
    if not notify:
        update["notifiers"] = {}
        update["rules"] = [r.model_copy(update={"notifiers": []}) for r in config.rules]
    return config.model_copy(update=update)


def run_replay(
    config: Config,
    data: Path,
    state_dir: Path,
    *,
    notify: bool = False,
    time_column: str | None = None,
    model: str | None = None,
    chunk_rows: int = 10_000,
    progress: Callable[[int], None] | None = None,
    labels: Path | None = None,
) -> ReplayResult:
    """Replay ``data`` (and the label file ``labels``) into ``state_dir``;
    ``progress(rows)`` after each chunk (rows of either file).

    With ``labels``, the label rows go through the live label join interleaved with the
    predictions in event time (:func:`~monitor.service.replay_source.merged`); a label
    stamped before its prediction comes first and waits as an early label
    (``labels.early_ttl``, ``labels.max_early``), joined when the prediction comes, as
    live. Performance windows mature by the join's event clock (``delay``, ``coverage``);
    at the end every slot still owed is computed (:meth:`LabelJoin.finish`). Raises
    :class:`ReplayError` when no model joins labels.

    The file and the options are checked before the folder is touched
    (:class:`~monitor.service.replay_source.ReplaySourceError`); the folder is then held
    (:func:`claim_replay_dir`) for the whole run. The tables are written to
    :data:`PARTIAL_DB` and take the place of the folder's database only once the replay
    has finished: a replay that fails or is interrupted (``KeyboardInterrupt``, which the
    CLI also raises on SIGTERM; re-raised as :class:`ReplayInterrupted`) leaves the folder
    as it was (its partial tables are deleted).
    """
    from monitor.service.alerting import Alerting  # noqa: PLC0415
    from monitor.service.pipeline import Pipeline  # noqa: PLC0415
    from storage.db import Store  # noqa: PLC0415

    started = datetime.now(UTC)
    source = ReplaySource(config, data, time_column=time_column, model=model, chunk_rows=chunk_rows,
                          received_at=started)
    label_source = None
    if labels is not None:
        if not any(m.performance.enabled for m in config.models):
            raise ReplayError("--labels: no model joins labels; set [models.performance] enabled = true for those"
                              " whose labels the file holds")
        topic = f"replay:{Path(labels).name}"
        if topic == source.topic:  # two files of one name: told apart in the dead letters
            topic = f"replay:labels:{Path(labels).name}"
        label_source = ReplaySource(config, labels, model=model, chunk_rows=chunk_rows, received_at=started,
                                    labels=True, topic=topic)
    state_dir = Path(state_dir)
    cfg = replay_config(config, state_dir, notify=notify,
                        labels_topic=label_source.topic if label_source is not None else None)
    rows = label_rows = 0
    with claim_replay_dir(state_dir):
        partial = state_dir / PARTIAL_DB
        for f in _db_files(partial):  # an earlier replay's, killed before it finished
            f.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE))  # SQLite's -wal/-shm copy it
        clock = _Clock(started)
        events = _EventClock(started)
        store = Store(partial, synchronous="NORMAL")  # a replay can be rerun: speed over power cuts
        alerting = None
        done = False
        try:
            alerting = Alerting(cfg, store, clock=events, delivery_clock=clock, reminders=False)
            events.engine = alerting.engine
            joined: dict[str, Any] = {}
            if label_source is not None:
                judge = alerting.on_performance

                def on_performance(*args: Any) -> None:
                    events.before_performance()  # the ticks due first, then the window's time
                    judge(*args)

                # as the daemon: rules judge each performance window in the flush transaction
                joined = {"on_performance": on_performance, "label_time": events.label_time,
                          "performance_savepoint": alerting.engine.memory_savepoint}
            pipeline = Pipeline(cfg, store, topic=source.topic, clock=clock, on_window=alerting.on_window,
                                max_payload_bytes=cfg.daemon.max_payload_bytes,
                                window_time=events.window_time, before_window=events.before_window,
                                after_windows=alerting.finish_slots,
                                # as the daemon: the engine's slot memory follows each flush's
                                # outcome, the transitions it made are logged once it commits
                                on_outcome=alerting.flush_outcome, **joined)
            if label_source is not None:
                assert pipeline.labels is not None  # the replay's config names a labels topic
                events.join = pipeline.labels
                pipeline.labels.compute_share = None  # no live stream waits: every due slot at each flush
            pipeline.register_initial_references()
            groups = merged(source, label_source) if label_source is not None else ([c] for c in source)
            for group in groups:
                for chunk in group:
                    # the daemon's own path: the live decoders, poison isolation, dead letters
                    if chunk.labels:
                        pipeline.process_label_records(chunk.records)
                        pipeline.process_label_dead(chunk.dead)
                        label_rows += chunk.rows
                    else:
                        pipeline.process_records(chunk.records)
                        if chunk.dead:
                            pipeline.process({}, chunk.dead, {0: max(d.offset for d in chunk.dead) + 1})
                    rows += chunk.rows
                    if progress is not None:
                        progress(chunk.rows)
                _flush(pipeline, labels=label_source is not None)
                if notify:
                    alerting.send_due(alerting.drain_timeout())
            # the end of the file: close what is open, as the idle tick of a quiet stream does
            clock.now = end_of_file_clock(pipeline, started, cfg)
            for name in pipeline.models:
                pipeline.last_activity.setdefault(name, started)
            pipeline.tick()
            _flush(pipeline, labels=label_source is not None)
            if events.now is not None:  # the ticks due up to the last window (a no-data alert it resolves)
                events.catch_up(events.now)
            if label_source is not None:
                # the labels' end: every performance window still owed is computed (judged at
                # the join's last time), as a quiet stream's are once they all matured
                assert pipeline.labels is not None
                pipeline.labels.finish()
                _flush(pipeline, labels=label_source is not None)
            if notify:
                _drain(alerting)
            from storage.alerts import list_alerts  # noqa: PLC0415

            fired = sum(1 for a in list_alerts(store) if a.get("fired_at"))
            st = pipeline.stats
            outcomes = _delivery_outcomes(store) if notify else {}
            result = ReplayResult(
                st.rows, st.windows_closed, st.late_rows, sum(st.dead_letters.values()) - st.label_dead_letters,
                fired, outcomes.get("sent", 0), state_dir,
                deliveries_pending=outcomes.get("pending", 0), deliveries_dead=outcomes.get("dead", 0),
                reminders_not_sent=alerting.engine.reminders_not_sent,
                labels_read=label_rows, labels_joined=_joined(store) if label_source is not None else 0,
                label_dead_letters=st.label_dead_letters,
                labels_out_of_order=label_source.behind_ttl if label_source is not None else 0,
            )
            done = True
        except KeyboardInterrupt:
            raise ReplayInterrupted(rows, state_dir) from None
        finally:
            if alerting is not None and not alerting.worker.close(2 * alerting.drain_timeout()):
                log.warning("replay: receivers still busy at the end; their deliveries stay pending")
            store.close()
            if not done:
                for f in _db_files(partial):
                    f.unlink(missing_ok=True)
        _install(partial, state_dir / DB_FILENAME)
    return result


def _flush(pipeline: Any, *, labels: bool) -> None:
    """Flush; with ``labels`` (the join uncapped: ``compute_share`` None), again while the
    label join left slots due (at most :data:`~monitor.labels.join.MAX_SLOTS_PER_FLUSH`
    per flush): a replay computes every due performance window at the event time it fell
    due, not chunks later. Each flush computes at least one slot, so this ends."""
    pipeline.flush()
    while labels and pipeline.labels is not None and pipeline.labels.due_left:
        pipeline.labels.want_flush()
        pipeline.flush()


def _joined(store: Any) -> int:
    """Labels that labelled a prediction (the join's ``joined`` counters, every model)."""
    from storage.labels import label_counters  # noqa: PLC0415

    return sum(c.get("joined", 0) for c in label_counters(store).values())


def _delivery_outcomes(store: Any) -> dict[str, int]:
    """Deliveries of the replay's outbox by status (``sent``, ``pending``, ``dead``): a
    replay's store is new, so these are exactly this replay's."""
    from storage.alerts import delivery_counts  # noqa: PLC0415

    out: dict[str, int] = {}
    for (_notifier, status), n in delivery_counts(store).items():
        out[status] = out.get(status, 0) + n
    return out


def end_of_file_clock(pipeline: Any, started: datetime, config: Config) -> datetime:
    """The wall clock of the idle close at the end of the file: every model's
    ``idle_timeout`` (the longest) past the replay's start and past the end plus
    ``lateness`` of every time window still open, so that close closes them all. Rows
    stamped ahead of the start (the replay's wall clock; the file's rows have no record
    timestamp) move the watermark no further than the start (see
    :func:`monitor.ingest.event_time.watermark_times`): their windows close only here."""
    longest = max((m.window.idle_timeout or timedelta(0) for m in config.models), default=timedelta(0))
    last = started
    for rt in pipeline.models.values():
        w = rt.windows
        if w.by == "time" and w.open:
            end_ms = max(k[3] for k in w.open) + w.lateness
            last = max(last, datetime.fromtimestamp(end_ms / 1000, UTC))
    return last + longest + timedelta(seconds=1)


def _drain(alerting: Any, rounds: int = 20) -> None:
    """Send what is due until nothing is (bounded: at most ``rounds`` rounds, each waiting at
    most the drain timeout; retries are the live daemon's job)."""
    for _ in range(rounds):
        if alerting.send_due(alerting.drain_timeout()) == 0:
            break
