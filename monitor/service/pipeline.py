"""The stream pipeline: decoded batches -> windows -> figures -> one durable transaction.

Single-threaded by design: only the consumer thread (and the rebalance listener,
which runs while the consumer thread waits in ``poll``) calls :meth:`Pipeline.process`,
:meth:`Pipeline.tick`, :meth:`Pipeline.flush` and the ownership methods. ``flush``
writes, in ONE transaction, the dead letters, every closed window with its
figures, the alert transitions they cause (with their outbox rows), late-row
counts and the stream state of every owned partition; it returns the offsets that
are now safe to commit to Kafka.

Ownership (several instances on one shared store): the stream state lives per
partition (:mod:`storage.stream`). :meth:`Pipeline.adopt` claims the partitions
Kafka assigned and resumes each from its stored state (a model's watermark,
count-window positions and open windows travel with the partition its rows come
from); :meth:`Pipeline.release_partitions` forgets partitions Kafka took away.
``flush`` writes only partitions this instance still holds: when another
instance claimed one meanwhile, the transaction is rolled back, everything
pending for that partition is dropped (its next owner recomputes it from the
stored state) and the rest is flushed again. Without a consumer group (replay,
tests) partitions are claimed as they appear.

A flush whose COMMIT raises (the connection dropped) may have committed all the
same: its pending work stays in memory, but before anything else is written the
flush reads the rows it wrote back (:func:`storage.stream.flush_outcome`). If it
committed, it is finished as if the COMMIT had answered; only otherwise is it
written again. Not all its writes are idempotent (late-row counts and the label
join's counters are added to what is stored), so writing a committed flush again
would count them twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from monitor.config import Config, ModelConfig, format_duration
from monitor.ingest.batch import ColumnBatch, claimed, next_offsets, record_positions
from monitor.ingest.decode import BatchDecoder
from monitor.ingest.event_time import iso_to_ms
from monitor.ingest.schema import ModelSchema, scores_are_probabilities
from monitor.ingest.skipped import SkippedOffsets, went_back
from monitor.labels.join import STATE_NAME as LABELS_STATE
from monitor.labels.join import LabelJoin, PerformanceListener, Sealed
from monitor.labels.reference import LabelledReference, prepare_labelled_reference
from monitor.metric_names import PERFORMANCE_METRICS
from monitor.references.calibration_cache import CalibrationCache
from monitor.references.load import ReferenceData, ReferenceSpec, load_reference
from monitor.references.rolling import WindowReferences
from monitor.service.shared_references import local_copy
from monitor.service.telemetry import ComputeHistogram, log_windows_stored
from monitor.windows.figures import (
    PreparedModel,
    WindowFigures,
    compute_figures,
    error_figures,
    window_key,
)
from monitor.windows.model_windows import LateRows, ModelWindows, OpenWindow, Resumed
from monitor.windows.pane_columns import WindowColumns
from monitor.windows.sample import finish_window
from monitor.windows.service_figures import service_figures
from monitor.windows.shape import describe
from storage.alerts import alert_lock_key
from storage.db import StorageError, Store
from storage.dead_letters import DeadLetter, write_dead_letters
from storage.records import DATASET, MetricRow, WindowRecord, iso_ms
from storage.redaction import quoted
from storage.references import latest_reference, register_reference, store_reference_file
from storage.retention import trim_window_samples
from storage.samples import WindowSample, write_window_sample, write_window_samples
from storage.state import load_state, save_state
from storage.stream import (
    Claim,
    PartitionsLost,
    PartitionWrite,
    adopt_legacy_state,
    claim_partitions,
    flush_outcome,
    replay_after_commit,
    save_partitions,
    touch_partitions,
)
from storage.stream import release_partitions as free_partitions
from storage.windows import add_late_rows, stored_time_windows, write_window, write_windows

log = logging.getLogger("driftwarden.pipeline")
#: at most one late-rows WARNING per model this often (the rows meanwhile are counted into it)
LATE_WARNING_INTERVAL = timedelta(minutes=1)

#: how often :meth:`Pipeline.flush` tries again after losing partitions in one call
_MAX_FENCED_RETRIES = 3


def instance_id() -> str:
    """This process's name in ``stream_partitions.owner`` and outbox claims:
    ``host:pid:random`` (unique per start, readable for people)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WindowListener(Protocol):
    """Called inside the flush transaction for each stored window (the alert engine)."""

    def __call__(self, figures: WindowFigures, model: ModelConfig) -> None: ...


@dataclass
class ModelRuntime:
    config: ModelConfig
    schema: ModelSchema
    windows: ModelWindows
    prepared: PreparedModel
    #: which reference each window is judged against (reference_mode)
    references: WindowReferences | None = None

    def __post_init__(self) -> None:
        if self.references is None:
            self.references = WindowReferences(self.prepared)


@dataclass
class PipelineStats:
    rows: int = 0
    windows_closed: int = 0
    late_rows: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    #: windows stored with status ``error`` (their figures raised)
    window_errors: int = 0
    #: seconds spent on each window's figures, per model
    compute: ComputeHistogram = field(default_factory=ComputeHistogram)
    #: valid labels consumed
    labels: int = 0
    #: performance windows (re)computed
    performance_windows: int = 0
    #: label records dead-lettered (also counted in ``dead_letters``, by reason code)
    label_dead_letters: int = 0

    def copy(self) -> PipelineStats:
        return dataclasses.replace(self, dead_letters=dict(self.dead_letters), compute=self.compute.copy())


@dataclass
class _Attempt:
    """One flush transaction: what it writes, to finish it by once its outcome is known
    (:meth:`Pipeline.flush`). The pending lists hold the very items it writes: items
    added later (before the outcome of a COMMIT that raised is known) are told apart."""

    #: written into every partition row it writes (see :func:`storage.stream.flush_outcome`)
    token: str
    closed: list[tuple[ModelRuntime, WindowFigures, frozenset[int]]]
    dead: list[DeadLetter]
    late: list[tuple[str, str, LateRows]]
    #: the positions it writes
    positions: dict[int, int]
    labels: Sealed | None
    #: partition -> epoch of each row it writes
    epochs: dict[int, int] = field(default_factory=dict)
    #: partitions it claimed itself (auto_claim), with their new epoch
    claimed: dict[int, int] = field(default_factory=dict)
    #: whether the single-row label state holds something once it commits
    label_row: bool = False
    performance_windows: int = 0


def _marked_new(dead: list[DeadLetter], replay_before: Mapping[int, int]) -> list[DeadLetter]:
    """``dead`` with the letters at or past their partition's replay boundary (none: all)
    marked :attr:`~storage.dead_letters.DeadLetter.new`; those before it are re-reads."""
    return [
        dataclasses.replace(d, new=True) if d.offset >= replay_before.get(d.partition, -1) else d for d in dead
    ]


def _unwritten(items: list[Any], written: list[Any]) -> list[Any]:
    """``items`` but those in ``written`` (the same objects)."""
    done = {id(x) for x in written}
    return [x for x in items if id(x) not in done]


@dataclass
class _Checkpoint:
    """What :meth:`Pipeline._process_records` may change, to undo a batch that raised."""

    windows: dict[str, Any]
    closed: int
    dead: int
    late: int
    stats: PipelineStats
    positions: dict[int, int]
    activity: dict[str, datetime]
    late_held: dict[str, tuple[int, LateRows | None]]
    labels: dict[str, Any] | None = None


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        topic: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_window: WindowListener | None = None,
        on_performance: PerformanceListener | None = None,
        max_payload_bytes: int = 65_536,
        owner: str | None = None,
        on_outcome: Callable[[bool], None] | None = None,
        window_time: Callable[[ModelRuntime, OpenWindow, datetime], datetime] | None = None,
        before_window: WindowListener | None = None,
        after_windows: Callable[[], None] | None = None,
        performance_savepoint: Callable[[], AbstractContextManager[object]] | None = None,
        label_time: Callable[[], datetime] | None = None,
    ) -> None:
        # performance_savepoint: the label join's LabelJoin.slot_savepoint (the alert
        # engine's memory_savepoint, wired with on_performance)
        self.config = config
        self.store = store
        #: this instance, as written in ``stream_partitions.owner``
        self.owner = owner or instance_id()
        #: partitions this instance holds, with the epoch it claimed each at
        self.claims: dict[int, int] = {}
        #: claim partitions as records arrive (no consumer group); the daemon turns it off
        self.auto_claim = True
        #: partitions of the topic (set by the daemon): to warn about a model split over instances
        self.topic_partitions: int | None = None
        self._split_warned: set[str] = set()
        #: per model: when its last late-rows WARNING was logged
        self._late_warned: dict[str, datetime] = {}
        #: per model: the late rows since its last late-rows WARNING (each counted once, in
        #: its all-rows window) and the newest window they belonged to; undone with a batch
        #: that raised (:class:`_Checkpoint`), so a row re-processed by the bisection counts once
        self._late_held: dict[str, tuple[int, LateRows | None]] = {}
        #: True while :meth:`process_records` runs a poll's records (possibly undone and
        #: bisected): the late-rows WARNING waits until what they counted is final
        self._in_poll = False
        self._refused_logged: set[tuple[int, str]] = set()
        #: partitions whose last claim was refused: (the instance holding them, its group generation)
        self.refused: dict[int, tuple[str, int]] = {}
        self.topic = topic or config.kafka.predictions_topic
        self.clock = clock
        self.on_window = on_window
        #: the time a closed window is stamped with (``computed_at``), given the window and
        #: the clock's time; None: the clock's time (a replay: the window's event time)
        self.window_time = window_time
        #: called in the flush transaction before a window is written (a replay: the alert
        #: ticks due in event time before it)
        self.before_window = before_window
        #: called in the flush transaction once its windows (performance windows included)
        #: were judged: the alerting judges the time slots some version had no window in
        self.after_windows = after_windows
        #: the time the label join's part of a flush runs at (performance windows' time of
        #: computation, the pace of recomputes); None: the clock's time (a replay: event time)
        self.label_time = label_time
        #: told whether each flush attempt committed (True) or not (False), once known; the
        #: windows' alert transitions were made inside it (the alerting logs them or drops them)
        self.on_outcome = on_outcome
        #: the flush attempt whose COMMIT raised, until the store tells whether it committed
        self._in_doubt: _Attempt | None = None
        self.max_payload_bytes = max_payload_bytes
        self.models: dict[str, ModelRuntime] = {}
        #: held while a new reference is put in use (:meth:`swap_reference`): an upload (the
        #: HTTP server's worker thread) and a reference another instance registered (the
        #: consumer thread) may swap at once, and each swap's reference, label reference,
        #: decision of probabilities and decoder must land together
        self._swap_lock = threading.Lock()
        #: calibrations of the references, kept in the state dir across restarts and reloads
        self.calibration_cache = CalibrationCache(Path(config.daemon.state_dir) / "calibration")
        #: per model: whether its scores are probabilities (decided at start, and again
        #: when its reference is replaced unless ``performance.probabilities`` is set)
        self.probabilities: dict[str, bool | None] = {}
        #: the column-limit warnings logged so far (model, reference hash, text): once per reference
        self._limits_told: set[tuple[str, str, str]] = set()
        for m in config.models:
            ref = load_reference(m.reference, ReferenceSpec.from_config(m))
            self.probabilities[m.name] = probs = scores_are_probabilities(m, ref.columns)
            if probs is not None and m.performance.probabilities is None:
                log.info("model %s: scores are %s", m.name, _probabilities_text(probs, m))
            schema = ModelSchema.from_config(m, probabilities=bool(probs))
            pm = PreparedModel.build(m, schema, ref, cache=self.calibration_cache)
            _warn_alpha(pm, self._limits_told)
            self.models[m.name] = ModelRuntime(m, schema, ModelWindows(m.name, m.window, schema.segments, m.limits), pm)
        restore_references(self.models.values(), store)
        self.decoder = self._build_decoder()
        #: next offset to consume per partition, as reflected in memory
        self.positions: dict[int, int] = {}
        #: first offset NOT reflected in durable state, per partition (replay boundary)
        self.replay_before: dict[int, int] = {}
        #: per claimed partition, the offset the consumer reads next as far as this
        #: pipeline knows (where a claim seeked it, then after the last record read): a
        #: record before it means the partition's log went back (see :meth:`_log_went_back`)
        self.fetch_next: dict[int, int] = {}
        #: where a gap past :attr:`fetch_next` is reported (offsets skipped unread: records
        #: deleted before they were read); None: not looked for (a replay). See :meth:`watch_skipped`
        self.skipped: SkippedOffsets | None = None
        #: closed windows to store, with the partitions their rows came from
        self._closed: list[tuple[ModelRuntime, WindowFigures, frozenset[int]]] = []
        self._dead: list[DeadLetter] = []
        self._late: list[tuple[str, str, LateRows]] = []
        self._dirty = False
        self.stats = PipelineStats()
        self.last_activity: dict[str, datetime] = {}
        #: the label join, for models with performance enabled (None: no label stream)
        self.labels: LabelJoin | None = None
        if config.joins_labels:
            refs = {
                n: prepare_labelled_reference(rt.config, rt.prepared.reference.path)
                for n, rt in self.models.items() if rt.config.performance.enabled
            }
            check_label_rules(config, refs)
            for lr in refs.values():
                _warn_label(lr)
            self.labels = LabelJoin(
                config, store, clock=clock, on_performance=on_performance, references=refs,
                probabilities=self.probabilities, slot_savepoint=performance_savepoint,
            )
            self.labels.prediction_clock = self._prediction_clock
        #: the single-row label state holds something (loaded, or committed by a flush):
        #: then a flush rewrites it, emptied when every partition's row keeps its part
        self._label_row = False

    def _build_decoder(self) -> BatchDecoder:
        """The predictions decoder for the models' current schemas (replaced as a whole, so
        a batch being decoded on another thread keeps the one it started with)."""
        kafka = self.config.kafka
        return BatchDecoder(
            {n: r.schema for n, r in self.models.items()},
            prediction_names={n: r.config.prediction for n, r in self.models.items()},
            max_message_bytes=kafka.max_message_bytes,
            max_future_skew_ms=int(kafka.max_future_skew.total_seconds() * 1000),
            model_field=self.config.model_field,
        )

    # -- start-up ---------------------------------------------------------------------

    def register_initial_references(self) -> None:
        """Record the configured reference files in ``references`` (idempotent), and
        switch to a reference registered later (retraining callback) if there is one."""
        now = self.clock()
        with self.store.transaction():
            for name, rt in self.models.items():
                latest = latest_reference(self.store, name)
                if latest and latest["source"] == "callback" and latest["sha256"] != rt.prepared.reference.sha256:
                    try:
                        path = local_copy(self.store, Path(self.config.daemon.state_dir), name, latest)
                        self.swap_reference(name, str(path or latest["path"]), latest["version"], record=False)
                        continue
                    except Exception as exc:  # noqa: BLE001
                        log.error("cannot load registered reference %s: %s", latest["path"], exc)
                        if self.store.shared:
                            continue  # another instance registered it: never register over it
                if latest is None or latest["sha256"] != rt.prepared.reference.sha256:
                    ref = rt.prepared.reference
                    register_reference(
                        self.store, model=name, version="", source="config", sha256=ref.sha256,
                        rows=ref.rows, path=str(ref.path), registered_at=now,
                    )

    # -- ownership ---------------------------------------------------------------------

    def restore(self) -> dict[int, int]:
        """Without a consumer group: claim every partition with stored state and resume
        from it; returns the offset to resume each known partition from (of the
        predictions topic; the labels topic's are in ``labels.positions``)."""
        self.restore_labels()
        now = self.clock()
        adopt_legacy_state(self.store, self.topic, now)
        known = [
            int(r["partition"])
            for r in self.store.query("SELECT partition FROM stream_partitions WHERE topic = ?", (self.topic,))
        ]
        self.adopt(known, generation=None)
        return self.resume_offsets()

    def restore_labels(self) -> None:
        """Load the label join's single-row durable state (labels-topic offsets, clocks) into
        memory: where each labels partition resumes is then in ``labels.positions``."""
        if self.labels is not None:
            state = load_state(self.store, LABELS_STATE)
            self._label_row = bool(state)
            self.labels.restore(state)

    def adopt(
        self, partitions: Iterable[int], generation: int | None, committed: Mapping[int, int] | None = None
    ) -> tuple[dict[int, int], set[int]]:
        """Claim ``partitions`` (assigned by Kafka at group ``generation``; None: no group)
        and resume each from the store unless what this instance holds is still current.

        ``committed``: the group's committed offsets. A stored state older than them was
        not written by the partition's last owner (instances with stores of their own,
        each SQLite): it is ignored and the partition starts from the committed offset.

        Returns ``(seek, refused)``: the offset to seek each claimed partition to, and
        the partitions whose claim was refused (an instance of a newer generation holds
        them: do not consume them until a later claim succeeds). Raises
        :class:`StorageError`; then nothing changed.
        """
        parts = sorted(set(partitions))
        if not parts:
            return {}, set()
        stale = 3 * max(self.config.kafka.session_timeout, self.config.kafka.commit_interval)
        claims = claim_partitions(
            self.store, self.topic, parts, owner=self.owner, generation=generation,
            held=self.claims, now=self.clock(), stale_after=stale,
        )
        refused = {p for p, c in claims.items() if not c.ok}
        for p, c in claims.items():
            if c.ok:
                self.refused.pop(p, None)
            else:
                self.refused[p] = (c.previous_owner, c.generation)
        for p in sorted(refused):
            c = claims[p]
            if (p, c.previous_owner) in self._refused_logged:
                continue
            self._refused_logged.add((p, c.previous_owner))
            log.warning(
                "partition %d: held by %s at group generation %d, newer than ours (%s): not consuming it"
                " until a claim succeeds. Expected for seconds during a rebalance; if it lasts, that"
                " instance is live in another consumer group or reads another Kafka cluster into this"
                " store: give it the same kafka.group_id and bootstrap_servers, or a store of its own,"
                " or stop it", p, c.previous_owner, c.generation, generation,
            )
        if refused & (set(self.claims) | set(self.positions)):
            self._forget(refused & (set(self.claims) | set(self.positions)), why="held by a newer generation")
        for p, c in list(claims.items()):
            k = (committed or {}).get(p)
            if c.ok and c.offset is not None and k is not None and k > c.offset:
                log.warning(
                    "partition %d: stored state (offset %d) is older than the group's committed"
                    " offset %d: another instance with a store of its own went further; starting"
                    " from the committed offset without it", p, c.offset, k,
                )
                claims[p] = dataclasses.replace(c, offset=None, state={}, continued=False)
        fresh = [c for c in claims.values() if c.ok and not c.continued]
        if fresh:
            self._forget({c.partition for c in fresh}, why="taken over")
            self._resume(fresh)
        for p, c in claims.items():
            if c.ok:
                self.claims[p] = c.epoch
        seek: dict[int, int] = {}
        resume = self.resume_offsets()
        for p, c in claims.items():
            if c.ok and p in resume:
                seek[p] = resume[p] if not c.continued else self.positions.get(p, resume[p])
        for p, c in claims.items():
            if c.ok and p not in seek:  # the consumer goes on from where Kafka has it
                self.fetch_next.pop(p, None)
        self.fetch_next.update(seek)
        return seek, refused

    def _resume(self, claims: list[Claim]) -> None:
        """Load the stored state of freshly claimed partitions into memory."""
        restored: list[str] = []
        for c in claims:
            if c.offset is not None:
                self.positions[c.partition] = c.offset
                self.replay_before[c.partition] = c.offset
        for c in claims:
            p = c.partition
            if self.labels is not None:
                self.labels.resume_partition(p, c.state.get("labels"))
            for name, snap in c.state.get("models", {}).items():
                rt = self.models.get(name)
                if rt is None:
                    log.warning("partition %d: state of model %r dropped (not configured)", p, name)
                    continue
                if rt.windows.live and rt.windows.partitions - {p}:
                    log.warning(
                        "model %s: state stored with partition %d while this instance already holds"
                        " the model from partitions %s: kept its own (key events by model, see README"
                        " \"Scaling out\")", name, p, sorted(rt.windows.partitions),
                    )
                    continue
                self._reshaped(rt, p, rt.windows.restore(snap, self.replay_before))
                restored.append(name)
        for name in restored:
            rt = self.models[name]
            assert rt.references is not None
            rt.references.restore(self.store)
        if claims:
            log.info(
                "partitions %s resumed from the store (models %s)",
                sorted(c.partition for c in claims), sorted(restored) or "none",
            )

    def _reshaped(self, rt: ModelRuntime, partition: int, res: Resumed) -> None:
        """A model's state resumed (from ``partition``'s row): when it was built with
        another window shape, say so (one WARNING) and tell the carry which windows of
        the new shape are stored already."""
        if res.carry is not None:
            span = res.carried_span()
            if span is not None:
                lo, hi = (None if t is None else iso_ms(t) for t in span)
                res.carry.stored.update(
                    (v, s, iso_to_ms(a), iso_to_ms(b)) for v, s, a, b in stored_time_windows(self.store, rt.config.name, lo, hi)
                )
        if res.same:
            if res.carry is not None:
                log.info("model %s: resuming the re-windowing of %d open windows of window %s (stopped"
                         " while their rows were re-read)", rt.config.name, len(res.carry.windows), describe(res.carry.source))
            return
        what = (
            f"the rows of its {len(res.carry.windows)} open windows (re-read from Kafka from offset"
            f" {_offsets(res.carry.first_offsets())}) go to windows of the new shape; windows already stored stay as they are"
            if res.carry is not None else "it had no open window; new windows use the new shape"
        )
        if res.carry is not None and rt.config.window.by == "count":
            what += " (count windows of the new shape start after the last position of the old ones)"
        log.warning(
            "model %s: its stream state (partition %d) was saved with window %s; the config says %s:"
            " %s (README \"Changing a window\")", rt.config.name, partition, describe(res.saved), res.shape.describe(), what,
        )

    def release_partitions(self, keep: set[int], *, mark_free: bool = True) -> list[int]:
        """Forget every partition not in ``keep`` (the new assignment after a rebalance).

        Its open windows were flushed with the partition's state, which its next owner
        resumes from; keeping them here would let the idle tick close them, and a stale
        position would make a later re-assignment re-read rows another member counted.
        ``mark_free``: mark their rows free in the store (False while the store is known to
        be away: the next owner then waits for the claim to go stale).
        """
        known = set(self.positions) | set(self.replay_before) | set(self.claims)
        for rt in self.models.values():
            known |= set(rt.windows.first_offsets()) | rt.windows.partitions
        gone = sorted(known - keep)
        if gone:
            held = {p: self.claims[p] for p in gone if p in self.claims}
            self._forget(set(gone), why="now belong to another member", store=mark_free)
            if held and mark_free:
                try:  # marked free (state kept): the next owner's claim needs no wait
                    free_partitions(self.store, self.topic, self.owner, held, self.clock())
                except StorageError as exc:
                    log.warning("storage: cannot mark partitions %s free: %s", sorted(held), exc)
        return gone

    def _forget(
        self, partitions: set[int], *, why: str, store: bool = True, labels: bool = True, clocks: bool = True
    ) -> None:
        """Drop everything held for ``partitions``: positions, claims, pending work fed
        by them, and the state of the models whose rows they carry. ``store``: False
        while the store is known to be away (the rolling references of the models reset
        are not reloaded from it). ``labels``: False keeps the label join's state of the
        labels partitions of these numbers. ``clocks``: False drops only the open windows
        holding rows of ``partitions`` and keeps every model's clock (watermark, count
        window positions), as for a model split over partitions: the windows it closed
        and stored stay behind it (a log that went back; no other instance resumes the
        model from a stored state here)."""
        if not partitions:
            return
        for p in partitions:
            self.positions.pop(p, None)
            self.replay_before.pop(p, None)
            self.claims.pop(p, None)
            self.fetch_next.pop(p, None)
        self._closed = [c for c in self._closed if not (c[2] & partitions)]
        self._dead = [d for d in self._dead if d.partition not in partitions]
        if self.labels is not None and labels:
            self.labels.forget(partitions)
        dropped, reset = 0, []
        for name, rt in self.models.items():
            hit = rt.windows.partitions & partitions or any(
                p in partitions for p in rt.windows.first_offsets()
            )
            if not hit:
                continue
            if rt.windows.partitions - partitions or not clocks:
                dropped += rt.windows.drop_partitions(partitions)  # a model split over partitions
                continue
            dropped += len(rt.windows.open)
            rt.windows = ModelWindows(name, rt.config.window, rt.schema.segments, rt.config.limits)
            assert rt.references is not None
            try:
                if not store:
                    raise StorageError("the store is unavailable")
                rt.references.restore(self.store)
            except StorageError as exc:  # a rebalance must not stop the daemon
                log.error("model %s: rolling reference not reloaded after the handover (%s); it"
                          " is rebuilt from the windows that close from now on", name, exc)
            self.last_activity.pop(name, None)
            reset.append(name)
        gone = set(reset)
        self._closed = [c for c in self._closed if c[0].config.name not in gone]
        self._late = [x for x in self._late if x[0] not in gone]
        (log.info if dropped or reset else log.debug)(
            "partitions %s %s: %d open windows handed over, models %s reset",
            sorted(partitions), why, dropped, sorted(reset) or "none",
        )
        self._dirty = True

    def keepalive(self) -> list[int]:
        """Mark the owned partitions' rows alive (an idle owner writes nothing else);
        partitions found claimed by another instance are forgotten and returned.

        Always reaches the store, with nothing owned too (a standby instance of a shared
        store; on SQLite, partitions not claimed yet because the store was away): a write
        transaction, so the daemon's storage error clears only on a real answer, and a
        store that is away raises :class:`StorageError` (on SQLite after its busy timeout)."""
        lost = touch_partitions(self.store, self.topic, self.owner, dict(self.claims), self.clock())
        if lost:
            log.warning("partitions %s were claimed by another instance: dropping them", lost)
            self._forget(set(lost), why="claimed by another instance")
        return lost

    def resume_offsets(self) -> dict[int, int]:
        """Per partition: where a restarted consumer must begin so open windows refill."""
        out = dict(self.replay_before)
        for rt in self.models.values():
            for p, o in rt.windows.first_offsets().items():
                out[p] = min(out.get(p, o), o)
        return out

    # -- the hot path -------------------------------------------------------------------

    def process_records(self, records: list[Any]) -> None:
        """Decode a list of Kafka records of the predictions topic and process them.

        Never raises because of the data: if processing a batch raises anything
        unexpected, the batch is undone and split in halves until the record(s)
        that make it raise are alone; each becomes a dead letter with reason
        ``internal: <ExceptionType>: ...`` and every other record is processed as
        if the poison had not been there (figures do not depend on batch cuts).
        """
        if not self.auto_claim:
            # a partition not (or no longer) claimed is not ours to count: it is re-read
            # from its stored state once a claim succeeds
            records = claimed(records, self.claims)
            if records:
                self._log_went_back(records)
        self._in_poll = True
        try:
            self._isolated(records, self._process_records)
        finally:
            self._in_poll = False
        self._warn_late(self.clock())

    def _log_went_back(self, records: list[Any]) -> None:
        """Records of a partition that begin before where its consumer was reading
        (:attr:`fetch_next`): the partition's log went back, the topic deleted and
        recreated or its records deleted by hand (Kafka then resets the consumer to
        ``auto_offset_reset``). Its offsets name other records now: what is held for the old
        log (its replay boundary and position, the open windows' rows of it) is dropped,
        keeping the claim, what its rows already made (closed windows, dead letters, late
        rows not stored yet) and the label join's state (the labels topic's), and the new log's records are counted
        from where they begin. Without this they all were taken for a replay of what the
        old log held (rows before the stored offset only re-fill open windows, labels
        before it are skipped) until the new log passed the old one's end: a
        recreated topic was silently not monitored for as many records as it had held.
        Kafka hands each partition's records in offset order, so the check is one
        comparison per partition and poll.

        Records that begin more than :data:`~monitor.ingest.skipped.MARKER_GAP` offsets
        AFTER it are a gap, handed to :attr:`skipped` (records deleted unread, or a hole
        of a compacted or transactional log: told apart there)."""
        # a gap ahead is handed to self.skipped (records may have been deleted unread: the
        # daemon asks the broker after the poll)
        for p, first, expected in went_back(records, self.fetch_next, self.skipped, self.topic):
            log.error(
                "partition %d: offset %d read where offset %d was next: its log went back (the"
                " topic was deleted and recreated, or its records deleted); what was held for"
                " the old log is dropped and its records are counted as new from offset %d",
                p, first, expected, first,
            )
            # what the old log's rows already made (closed windows, dead letters, late
            # rows not stored yet) is still stored; the label join's state is the labels
            # topic's, which did not go back. The models keep their clocks: a window the
            # old log closed is stored, so the new log's rows of it are late (a reset clock
            # made it again, stored over the old one: same key, same id)
            epoch, pending = self.claims[p], (self._closed, self._dead, self._late)
            self._forget({p}, why="went back to an earlier offset", labels=False, clocks=False)
            self.claims[p] = epoch
            self._closed, self._dead, self._late = pending
        # fetch_next moves on in _process_records, from the offsets the decoder read anyway

    def watch_skipped(self, skipped: SkippedOffsets) -> None:
        """Report gaps in the offsets read of the predictions topic and of the labels
        topic to ``skipped`` (the daemon: it can ask the broker to confirm them)."""
        self.skipped = skipped
        if self.labels is not None:
            self.labels.skipped = skipped

    def _isolated(self, records: list[Any], process: Callable[[list[Any]], None]) -> None:
        """``process(records)``; if it raises, roll back and bisect until the records that
        make it raise are alone, then dead-letter each of those (``internal: ...``)."""
        if not records:
            return
        cp = self._checkpoint()
        try:
            process(records)
        except Exception as exc:  # noqa: BLE001 - no record may stop the daemon
            self._rollback(cp)
            if len(records) == 1:
                self._poison(records[0], exc)
                return
            mid = len(records) // 2
            self._isolated(records[:mid], process)
            self._isolated(records[mid:], process)

    def _poison(self, rec: Any, exc: Exception) -> None:
        reason = quoted(f"internal: {type(exc).__name__}: {exc}", 500)
        log.error(
            "record %s[%s]@%s made processing raise; dead-lettered (%s)", rec.topic, rec.partition, rec.offset,
            reason, exc_info=exc,
        )
        letter = DeadLetter(rec.topic, rec.partition, rec.offset, reason, rec.value, self.clock())
        if self.labels is not None and rec.topic == self.labels.topic and rec.topic != self.topic:
            self._label_dead([letter])
            self.labels.advance_positions([rec])
            return
        self.process({}, [letter], {rec.partition: rec.offset + 1})

    def _checkpoint(self) -> _Checkpoint:
        return _Checkpoint(
            windows={n: rt.windows.checkpoint() for n, rt in self.models.items()},
            closed=len(self._closed), dead=len(self._dead), late=len(self._late), stats=self.stats.copy(),
            positions=dict(self.positions), activity=dict(self.last_activity), late_held=dict(self._late_held),
            labels=self.labels.checkpoint() if self.labels is not None else None,
        )

    def _rollback(self, cp: _Checkpoint) -> None:
        for n, wcp in cp.windows.items():
            self.models[n].windows.rollback(wcp)
        del self._closed[cp.closed:]
        del self._dead[cp.dead:]
        del self._late[cp.late:]
        self.stats = cp.stats
        self.positions = cp.positions
        self.last_activity = cp.activity
        self._late_held = cp.late_held
        if self.labels is not None and cp.labels is not None:
            self.labels.rollback(cp.labels)

    def _process_records(self, records: list[Any]) -> None:
        # read once: the typed decoder's partitions and offsets, and the next offsets
        positions = record_positions(records)
        batches, dead = self.decoder.decode(records, now=self.clock(), positions=positions)
        nxt = next_offsets(records, positions)
        fetched = self.fetch_next
        for p, o in nxt.items():
            if o > fetched.get(p, -1):
                fetched[p] = o
        self.process(batches, dead, nxt)

    def process(self, batches: Mapping[str, ColumnBatch], dead: list[DeadLetter], next_offsets: Mapping[int, int]) -> None:
        now = self.clock()
        for name, batch in batches.items():
            rt = self.models[name]
            late = rt.windows.add(batch, self.replay_before or None)
            if self.labels is not None and len(batch) and rt.windows.last_capped is not None:
                self.labels.add_predictions(name, rt.windows.last_capped, self.replay_before or None)
            if len(rt.windows.partitions) > 1 and name not in self._split_warned:
                self._warn_split(name, rt)
            self.stats.rows += len(batch)
            n_late = 0
            for lr in late:
                self._late.append((name, rt.config.window.by, lr))
                self.stats.late_rows += lr.count
                if lr.segment == "":  # a row is late in its segments' windows too: count it once
                    n_late += lr.count
            self._hold_late(name, late)
            if n_late < len(batch):
                # only rows that went into a window keep the stream from being idle: one
                # late row (dropped) every idle_timeout must not hold its windows open for good
                self.last_activity[name] = now
            self._collect(rt, rt.windows.close_due(), now)
        for rt in self.models.values():
            if rt.windows.carry is not None:
                rt.windows.passed(next_offsets)
                if rt.windows.carry is None:
                    self._carry_ended(rt)
                    self._collect(rt, rt.windows.close_due(), now)
        if dead:
            fresh = [d for d in dead if d.offset >= self.replay_before.get(d.partition, -1)]
            if not self.auto_claim:
                # past the replay boundary of a claimed partition: not a re-read, whatever
                # letter a log that went back left at the offset (write_dead_letters)
                dead = _marked_new(dead, self.replay_before)
            self._dead.extend(dead)
            for d in fresh:
                code = d.reason.split(":", 1)[0]
                self.stats.dead_letters[code] = self.stats.dead_letters.get(code, 0) + 1
        for p, o in next_offsets.items():
            if o > self.positions.get(p, -1):
                self.positions[p] = o
        self._dirty = True
        if not self._in_poll:  # called on its own (not inside process_records): final now
            self._warn_late(now)

    def process_label_records(self, records: list[Any]) -> None:
        """Decode and buffer records of the labels topic, with the same isolation as
        :meth:`process_records`: a record that makes processing raise is dead-lettered
        (``internal: ...``) and the others are processed as if it had not been there.
        Records already reflected in durable state (re-read after a restart) are skipped.
        """
        if self.labels is not None:
            if not self.auto_claim and self.store.shared:
                # labels partition p carries the models of predictions partition p: its
                # join belongs to p's owner, who resumes it from p's row (see monitor.labels.join)
                records = [r for r in records if r.partition in self.claims]
            if records:
                self.labels.log_went_back(records)
            self._isolated(records, self._process_label_records)

    def _process_label_records(self, records: list[Any]) -> None:
        assert self.labels is not None
        fresh = self.labels.fresh(records)
        if fresh:
            batches, dead = self.labels.decoder.decode(fresh, now=self.clock())
            self.labels.add_labels(batches)
            self.stats.labels += sum(len(b) for b in batches.values())
            self._label_dead(dead)
        self.labels.advance_positions(records)

    def process_label_dead(self, dead: list[DeadLetter]) -> None:
        """Label records refused before decoding (a replay's label file: a row over the size
        limit, a CSV row that cannot be read): dead letters counted as the decoder's, and
        consumed (the labels topic's position moves past them)."""
        if self.labels is not None and dead:
            self._label_dead(dead)
            self.labels.advance_positions(dead)

    def _label_dead(self, dead: list[DeadLetter]) -> None:
        if not self.auto_claim:  # only records past the join's stored positions are decoded
            dead = [dataclasses.replace(d, new=True) for d in dead]
        self._dead.extend(dead)
        self.stats.label_dead_letters += len(dead)
        for d in dead:
            code = d.reason.split(":", 1)[0]
            self.stats.dead_letters[code] = self.stats.dead_letters.get(code, 0) + 1
        if dead:
            self._dirty = True

    def _hold_late(self, name: str, late: list[LateRows]) -> None:
        """Count ``late`` (a batch's late rows of ``name``) into the next late-rows WARNING
        (:meth:`_warn_late`): each row once (a row late in its all-rows window is late in
        its segments' windows too), with the newest window they belonged to."""
        rows = [lr for lr in late if lr.segment == ""]
        if not rows:
            return
        held, newest = self._late_held.get(name, (0, None))
        top = max(rows, key=lambda lr: lr.end)
        if newest is None or top.end > newest.end:
            newest = top
        self._late_held[name] = (held + sum(lr.count for lr in rows), newest)

    def _warn_late(self, now: datetime) -> None:
        """A WARNING per model whose rows arrived after their window closed (held by
        :meth:`_hold_late`): they count in the window's ``late_rows`` (a window never
        stored, closed empty by the wall clock, keeps not even that) and in no figure, which
        read as nothing at all (the count was in ``/metrics`` and the shutdown line only).
        At most one per model every :data:`LATE_WARNING_INTERVAL` (wall clock ``now``),
        counting the rows since the last. Called once a batch's outcome is final (never
        inside the poison-pill isolation, whose undone attempts must not be counted)."""
        for name, (held, newest) in list(self._late_held.items()):
            last = self._late_warned.get(name)
            if last is not None and now - last < LATE_WARNING_INTERVAL:
                continue
            rt = self.models.get(name)
            del self._late_held[name]
            if rt is None:
                continue
            self._late_warned[name] = now
            self._log_late(name, rt, held, newest)

    def _log_late(self, name: str, rt: ModelRuntime, held: int, newest: LateRows | None) -> None:
        """The late-rows WARNING of :meth:`_warn_late`: ``held`` rows, the newest window they belonged to."""
        window = rt.config.window
        if window.by == "time" and newest is not None:
            where = f"the newest for the window {iso_ms(newest.start)}..{iso_ms(newest.end)}"
        else:
            where = "for windows already closed"
        idle = "off" if window.idle_timeout is None else format_duration(window.idle_timeout)
        log.warning(
            "model %s: %d row(s) arrived after their window closed (%s): counted in late_rows and"
            " driftwarden_late_rows_total, in no figure. Rows stamped further back than"
            " window.lateness (%s) behind the newest, or during a pause longer than"
            " window.idle_timeout (%s) after which the wall clock closed their windows"
            " (a producer sending a backlog), are late",
            name, held, where, format_duration(window.lateness), idle,
        )

    def _warn_split(self, name: str, rt: ModelRuntime) -> None:
        """Once per model: its rows come from several partitions while other instances own
        some of the topic's partitions, so its windows are split between instances."""
        if self.topic_partitions is None or len(self.claims) >= self.topic_partitions:
            return
        self._split_warned.add(name)
        log.warning(
            "model %s: rows arrive on partitions %s while other instances own part of the topic:"
            " each instance computes its windows from part of the rows and stores them under the same"
            " window ids, so the last write wins and the other instances' rows are missing from the"
            " stored figures. Key events by model (README \"Scaling out\")",
            name, sorted(rt.windows.partitions),
        )

    def _prediction_clock(self, model: str) -> int | None:
        """How far ``model``'s predictions have come (epoch ms): its windows' event clock
        (None: fewer than two rows yet, or no such model)."""
        rt = self.models.get(model)
        return None if rt is None else rt.windows.max_ts

    def touch(self) -> None:
        """Restart the idle clocks: called while consumption is paused (Kafka unreachable,
        storage failing), so a pause is not taken for a quiet stream and the rows still
        waiting in Kafka do not turn late."""
        now = self.clock()
        for name in self.last_activity:
            self.last_activity[name] = now
        if self.labels is not None:
            self.labels.touch()

    def excuse(self, blocked: timedelta) -> None:
        """The consumer loop spent ``blocked`` away from waiting on Kafka (a flush held
        up by the store, figures, a rebalance: see ``Daemon._poll_loop``): move the idle
        clocks on by that much, capped at now. Only a poll that brings nothing is a
        quiet stream; without this, a flush that waits longer than ``idle_timeout``
        closes the open windows by the wall clock and the rows still waiting in Kafka
        all turn late."""
        if blocked <= timedelta(0):
            return
        now = self.clock()
        for name, last in self.last_activity.items():
            self.last_activity[name] = min(now, last + blocked)
        if self.labels is not None:
            self.labels.excuse(blocked)

    def tick(self) -> None:
        """Close windows of streams idle for longer than their ``idle_timeout``; let the
        label join mature idle models' performance windows and run due recomputes."""
        now = self.clock()
        if self.labels is not None:
            self.labels.tick()
        for name, rt in self.models.items():
            timeout = rt.config.window.idle_timeout
            last = self.last_activity.get(name)
            if timeout is None or last is None or (now - last) < timeout:
                continue
            closed = rt.windows.close_idle(int(now.timestamp() * 1000))
            self._carry_ended(rt)
            if closed:
                self._collect(rt, closed, now)
                self._dirty = True

    @staticmethod
    def _carry_ended(rt: ModelRuntime) -> None:
        """Log what a carry into a new window shape did, once it ended."""
        done = rt.windows.carry_ended
        if done is None:
            return
        rt.windows.carry_ended = None
        skipped = f"; {done.skipped_rows} were in windows already stored and stay there only" if done.skipped_rows else ""
        gone = "; the stream went idle before all of them were re-read (gone from Kafka?)" if done.idle else ""
        log.info("model %s: re-windowing done: %d rows of %d old open windows went to windows of the new shape%s%s",
                 done.model, done.carried_rows - done.skipped_rows, done.windows, skipped, gone)

    def _collect(self, rt: ModelRuntime, closed: list[OpenWindow], now: datetime) -> None:
        by = rt.config.window.by
        for w in closed:
            t0 = time.perf_counter()
            at = now if self.window_time is None else self.window_time(rt, w, now)
            cols = WindowColumns(w.chunks, w.order())  # joined once, for the figures and the sample both
            try:
                figs = judge_window(rt, w, at, cols)
            except Exception as exc:  # noqa: BLE001 - one window's data must not stop the others
                figs = error_figures(rt.prepared, w, by=by, now=at, error=f"internal: {type(exc).__name__}: {exc}")
                log.error("model %s: figures of window %s failed; stored with status error", rt.config.name,
                          figs.record.id, exc_info=exc)
                self.stats.window_errors += 1
            else:
                figs = self._with_extras(rt, w, figs)
            figs = finish_window(figs, w, [*rt.schema.features, rt.config.prediction], self.config.reports,
                                 time.perf_counter() - t0, cols.joined())
            self.stats.compute.observe(rt.config.name, figs.compute_seconds)
            self._closed.append((rt, figs, frozenset(w.ranges) | frozenset(w.saved_ranges)))
            self.stats.windows_closed += 1

    def _with_extras(self, rt: ModelRuntime, w: OpenWindow, figs: WindowFigures) -> WindowFigures:
        """Service figures (event rate, latency) and, with a labelled reference, the
        estimated performance; the reference's performance figures for relative rules."""
        cfg = rt.config
        size = round(cfg.window.size.total_seconds() * 1000) if cfg.window.by == "time" else None  # type: ignore[union-attr]
        extra = service_figures(w, by=cfg.window.by, size_ms=size, latency=rt.schema.f_latency is not None)
        ref = figs.reference_metrics
        if self.labels is not None and cfg.name in self.labels.models:
            if figs.record.status == "ok":
                extra += self.labels.estimates(cfg.name, w)
            ref = {**ref, **self.labels.reference_metrics(cfg.name)}
        if not extra and ref is figs.reference_metrics:
            return figs
        return dataclasses.replace(figs, metrics=[*figs.metrics, *extra], reference_metrics=ref)

    # -- durability -----------------------------------------------------------------------

    @property
    def pending_counts(self) -> tuple[int, int]:
        """(closed windows, dead letters) waiting for the next flush."""
        return len(self._closed), len(self._dead)

    @property
    def has_pending(self) -> bool:
        """Work that should be made durable now (closed windows, dead letters, late rows).

        Rows buffered for the label join do not count: they are written with the next
        flush (at a window close, or every ``kafka.commit_interval``), together with the
        offsets they account for, so the join adds no commits of its own.
        """
        return bool(self._closed or self._dead or self._late)

    def flush(self) -> dict[int, int] | None:
        """Persist everything pending in one transaction; return offsets safe to commit.

        Returns None when there was nothing to write. On a storage error nothing
        is lost: the pending work stays in memory and the error propagates. When the
        COMMIT itself raised, the next call (or this one, if the store answers at once)
        first finds out whether it committed (see the module documentation): a flush is
        stored once, however often it is called again.
        """
        if self._in_doubt is not None:
            self._settle(self._in_doubt, fresh=False)  # raises StorageError while the store is away
        wants_labels = self.labels is not None and self.labels.wants_flush
        if not self._dirty and not self.has_pending and not wants_labels:
            return None
        for attempt in range(_MAX_FENCED_RETRIES + 1):
            att = self._begin()
            try:
                self._write(att)
                break
            except PartitionsLost as exc:
                self._rolled_back(att)
                log.warning(
                    "partitions %s were claimed by another instance: their pending windows are"
                    " left to it (it resumes from the last stored state); flushing the rest",
                    exc.partitions,
                )
                self._forget(set(exc.partitions), why="claimed by another instance")
                if attempt == _MAX_FENCED_RETRIES:
                    raise StorageError(f"partitions keep being claimed by other instances: {exc}") from exc
            except StorageError as exc:
                # the COMMIT may have reached the store and committed: only the rows can tell
                self._in_doubt = att
                try:
                    committed = self._settle(att, fresh=True)
                except StorageError:
                    committed = False  # the store is away: found out by the next call
                if not committed:
                    raise
                log.warning("storage: %s; the flush had committed all the same (found in the store):"
                            " it is not written again", exc)
                return self.commit_offsets()
            except Exception:
                self._rolled_back(att)  # raised inside the transaction: rolled back
                raise
        self._committed(att, fresh=True)
        return self.commit_offsets()

    def _begin(self) -> _Attempt:
        """A flush attempt starts: what it writes is what is pending now."""
        att = _Attempt(
            token=uuid.uuid4().hex, closed=list(self._closed), dead=list(self._dead), late=list(self._late),
            positions=dict(self.positions), labels=self.labels.seal() if self.labels is not None else None,
        )
        self._dirty = False  # set again by whatever changes before its outcome is known
        return att

    def _committed(self, att: _Attempt, *, fresh: bool) -> None:
        """``att`` committed: what it wrote is durable (``fresh``: nothing changed since it began)."""
        if fresh:
            # later (not fresh): members observed since are pending too; writing the
            # attempt's again is harmless (an upsert, and a prune to the members in memory)
            for rt in self.models.values():
                assert rt.references is not None
                rt.references.committed()
        log_windows_stored(figs for _, figs, _ in att.closed)
        if self.labels is not None:
            assert att.labels is not None
            self.labels.committed(att.labels)
            self._label_row = att.label_row
            self.stats.performance_windows += att.performance_windows
        self._closed = _unwritten(self._closed, att.closed)
        self._dead = _unwritten(self._dead, att.dead)
        self._late = _unwritten(self._late, att.late)
        # everything it consumed is now durable
        self.replay_before = replay_after_commit(self.replay_before, self.positions, att.positions)
        if self.on_outcome is not None:
            self.on_outcome(True)

    def _rolled_back(self, att: _Attempt) -> None:
        """``att`` did not commit: what it wrote is still pending (and its own claims void)."""
        for p, epoch in att.claimed.items():
            if self.claims.get(p) == epoch:
                del self.claims[p]  # claimed again by the next attempt
        self._dirty = True
        if self.labels is not None and att.labels is not None:
            self.labels.rolled_back(att.labels)
        if self.on_outcome is not None:
            self.on_outcome(False)

    def _settle(self, att: _Attempt, *, fresh: bool) -> bool:
        """Find out whether ``att``, whose COMMIT raised, committed, and finish it so;
        returns whether it did. Raises :class:`StorageError` while the store cannot tell.

        A flush that owned no partition wrote no token: it is taken as rolled back. On a
        shared store such a flush writes nothing that adds up (the label join writes only
        models whose home partition is owned, and no single-row state); on SQLite a
        COMMIT that raised did not happen.
        """
        outcome = flush_outcome(self.store, self.topic, att.token, att.epochs)
        self._in_doubt = None
        if outcome is None:
            # every row it wrote was claimed again since, and each partition resumed from
            # whatever was stored: what it held for them is their owners' (as when fenced)
            lost = {p for p, e in att.epochs.items() if self.claims.get(p) == e}
            log.warning(
                "a flush whose COMMIT failed cannot be told committed or not: its partitions %s"
                " were all claimed again since; their owners resume them from what was stored",
                sorted(att.epochs),
            )
            self._rolled_back(att)
            self._forget(lost, why="claimed by another instance")
            return False
        if outcome:
            self._committed(att, fresh=fresh)
        else:
            self._rolled_back(att)
        return outcome

    def _write(self, att: _Attempt) -> None:
        """One flush transaction: fence (the owned partitions' rows, first), then dead
        letters, windows with their alerts, late rows, reference members, the label join.
        Notes in ``att`` the rows it writes and what it found."""
        now = self.clock()
        with self.store.transaction():
            if self.auto_claim:
                seen = set(self.positions) | {d.partition for d in self._dead}
                if self.labels is not None:
                    seen |= set(self.labels.positions)
                for rt in self.models.values():
                    seen |= rt.windows.partitions
                new = sorted(seen - set(self.claims))
                if new:
                    got = claim_partitions(
                        self.store, self.topic, new, owner=self.owner, generation=None, now=now
                    )
                    att.claimed = {p: c.epoch for p, c in got.items() if c.ok}
                    self.claims.update(att.claimed)
            writes = self._partition_writes()
            att.epochs = {p: w.epoch for p, w in writes.items()}
            save_partitions(self.store, self.topic, self.owner, writes, now, token=att.token)
            held = self.labels.held(self.claims) if self.labels is not None else []
            # the models whose alerts this flush may change, locked in one sorted go: a
            # performance window's rules must not take a model's lock after another's
            models = sorted({rt.config.name for rt, _, _ in self._closed} | set(held))
            if models:
                self.store.lock(*(alert_lock_key(m) for m in models))
            if self._dead:
                wrote = write_dead_letters(self.store, self._dead, max_payload_bytes=self.max_payload_bytes)
                if wrote.conflicts:
                    log.warning(
                        "%d dead letters not stored, only counted: the letter of an earlier log of"
                        " their partition (the topic deleted and recreated) holds their offset (%s)",
                        len(wrote.conflicts), ", ".join(f"{t}[{p}]@{o}" for t, p, o in wrote.conflicts[:10]),
                    )
            self._trim_samples(self._store_windows([(rt, figs) for rt, figs, _ in self._closed]))
            for model, by, lr in self._late:
                w = OpenWindow(lr.version, lr.segment, lr.start, lr.end)
                wid = window_key(model, by, w).id
                add_late_rows(self.store, wid, lr.count)
            for rt in self.models.values():
                assert rt.references is not None
                rt.references.write(self.store)
            if self.labels is None:
                self._after_windows()
                return
            closed = [figs.record.key for rt, figs, _ in self._closed if rt.config.window.by == "time"]
            at = self.label_time() if self.label_time is not None else now
            att.performance_windows = self.labels.write(at, closed, held)
            self._after_windows()
            rest = self.labels.remainder(self.claims)
            att.label_row = self._label_row
            if rest or self._label_row:
                # what no owned partition's row keeps (a store of one's own only)
                save_state(self.store, LABELS_STATE, rest)
                att.label_row = bool(rest)

    def _after_windows(self) -> None:
        """:attr:`after_windows`, when set (in the flush transaction)."""
        if self.after_windows is not None:
            self.after_windows()

    def _partition_writes(self) -> dict[int, PartitionWrite]:
        """Each owned partition's row: its consumed offset and the models it is home to
        (a model's state goes with the lowest owned partition its rows came from)."""
        owned = set(self.claims)
        homes: dict[int, dict[str, Any]] = {p: {} for p in owned}
        for name, rt in self.models.items():
            mine = rt.windows.partitions & owned
            if mine:
                homes[min(mine)][name] = rt.windows.snapshot()
        out = {}
        for p in sorted(owned):
            state: dict[str, Any] = {"models": homes[p]}
            if self.labels is not None:  # the labels partition of the same number (see monitor.labels.join)
                state["labels"] = self.labels.partition_state(p)
            out[p] = PartitionWrite(self.claims[p], self.positions.get(p), state)
        return out

    def _trim_samples(self, models: set[str]) -> None:
        """Delete the window samples of ``models`` (those this flush stored a sample of)
        beyond each one's newest ``[reports] sample_windows``: once per model and flush, after
        its windows, not after each window.

        What stays is what trimming after each stored sample left: the newest ``keep`` of the
        stored and the new samples, by a total order (window end, then id), so a sample
        trimmed after one window could not have survived a later trim either; a model whose
        samples this flush all rolled back (its rules raised) is not trimmed, as before. With
        ``sample_windows = 0`` no sample is stored (:meth:`_store_window`), so none is trimmed."""
        for model in sorted(models):
            trim_window_samples(self.store, model, self.config.reports.sample_windows)

    def _store_windows(self, closed: list[tuple[ModelRuntime, WindowFigures]]) -> set[str]:
        """Write the windows ``closed`` (in the flush transaction) and run the rules on each;
        returns the models of which a sample was stored (see :meth:`_trim_samples`).

        What :meth:`_store_window` on each in turn leaves, in a few statements a flush
        rather than ~12 a window (:func:`storage.windows.write_windows`): the windows and
        figures first, then the rules of each window in its own savepoint (they read no
        window, figure or sample), a window whose rules raised written again with status
        ``error`` (its sample not stored), then the samples. Window by window, as before,
        when a ``before_window`` hook runs (the replay's alert ticks read the windows
        stored before each one), when a window id comes twice, or when the batch raises
        anything but a storage error (each window's own error, then)."""
        if self.before_window is not None or len({f.record.id for _, f in closed}) < len(closed):
            return self._store_one_by_one(closed)
        try:
            with self.store.transaction():
                write_windows(self.store, [(figs.record, figs.metrics) for _, figs in closed])
        except StorageError:
            raise
        except Exception:  # noqa: BLE001 - found again, window by window, with its window
            return self._store_one_by_one(closed)
        failed: list[tuple[WindowRecord, list[MetricRow]]] = []
        samples: list[tuple[WindowSample, datetime]] = []
        keep = self.config.reports.sample_windows > 0
        for rt, figs in closed:
            if self.on_window is not None:
                try:
                    with self.store.transaction():
                        self.on_window(figs, rt.config)
                except StorageError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    failed.append(self._error_window(figs, exc))
                    continue
            if keep and figs.sample is not None:
                samples.append((figs.sample, figs.record.computed_at))
        write_windows(self.store, failed)
        write_window_samples(self.store, samples)
        return {s.model for s, _ in samples}

    def _store_one_by_one(self, closed: list[tuple[ModelRuntime, WindowFigures]]) -> set[str]:
        """:meth:`_store_window` on each of ``closed`` in turn; the models of which a sample
        was stored."""
        return {figs.record.key.model for rt, figs in closed if self._store_window(rt, figs)}

    def _error_window(self, figs: WindowFigures, exc: Exception) -> tuple[WindowRecord, list[MetricRow]]:
        """Storing or judging window ``figs`` raised ``exc`` (not a storage error): the window
        as it is stored instead, status ``error`` and only its row count (logged, counted)."""
        log.error("window %s: storing or alerting failed; stored with status error", figs.record.id, exc_info=exc)
        self.stats.window_errors += 1
        err = dataclasses.replace(
            figs.record, status="error", error=quoted(f"internal: {type(exc).__name__}: {exc}", 500)
        )
        return err, [m for m in figs.metrics if m.metric == "row_count" and m.column == ""]

    def _store_window(self, rt: ModelRuntime, figs: WindowFigures) -> bool:
        """Write one window and run the rules on it, in a savepoint of the flush transaction;
        returns whether its sample was stored (see :meth:`_trim_samples`).

        Storage errors propagate (the whole flush is retried). Anything else the
        rules raise for this window undoes only this window's savepoint, and the
        window is stored with status ``error`` instead, so one window cannot block
        the flush of every other one forever.
        """
        if self.before_window is not None:
            self.before_window(figs, rt.config)
        sample = figs.sample if self.config.reports.sample_windows > 0 else None
        try:
            with self.store.transaction():
                write_window(self.store, figs.record, figs.metrics)
                if sample is not None:
                    # each model's samples beyond the newest ``sample_windows`` go once per
                    # flush, after its windows (:meth:`_trim_samples`)
                    write_window_sample(self.store, sample, now=figs.record.computed_at)
                if self.on_window is not None:
                    self.on_window(figs, rt.config)
            return sample is not None
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            err, rows = self._error_window(figs, exc)
            with self.store.transaction():
                write_window(self.store, err, rows)
            return False

    def snapshot(self) -> dict[str, Any]:
        """The whole stream state in one piece (what the partition rows hold together)."""
        return {
            "offsets": {str(p): o for p, o in self.positions.items()},
            "models": {n: rt.windows.snapshot() for n, rt in self.models.items()},
        }

    def commit_offsets(self) -> dict[int, int]:
        """Offsets to commit: never past a row an open window still needs after a crash."""
        out = dict(self.positions)
        for rt in self.models.values():
            for p, o in rt.windows.first_offsets().items():
                if p in out:
                    out[p] = min(out[p], o)
        return out

    # -- references -------------------------------------------------------------------------

    def swap_reference(
        self, model: str, path: str, version: str, *, record: bool = True, source: str = "callback",
        loaded: ReferenceData | None = None,
    ) -> PreparedModel:
        """Prepare a new reference for ``model`` and use it from the next window on.

        ``loaded``: the file at ``path`` already loaded (and so validated) by the caller.
        Raises ``ReferenceError`` for a reference unfit to judge windows against (its
        features, or its labels for the label join), before anything is recorded or put
        in use: the reference in force then stays, all of it. Safe to
        call from two threads at once (an upload, a reference another instance registered):
        the one that puts its reference in use last wins, with all that follows from it.
        """
        rt = self.models[model]
        ref = loaded or load_reference(Path(path), ReferenceSpec.from_config(rt.config))
        pm = PreparedModel.build(rt.config, rt.schema, ref, version, cache=self.calibration_cache)
        # the labels read (and refused: ReferenceError) before anything is recorded or switched
        lr = None
        if self.labels is not None and model in self.labels.models:
            lr = prepare_labelled_reference(rt.config, ref.path)
            # what start-up and a reload refuse: a rule the references cannot serve (one on
            # estimated_* with a reference without labels never fired again, silently)
            check_label_rules(self.config, {**{n: jm.reference for n, jm in self.labels.models.items()}, model: lr})
        if record:
            with self.store.transaction():
                register_reference(
                    self.store, model=model, version=version, source=source, sha256=ref.sha256,
                    rows=ref.rows, path=str(ref.path), registered_at=self.clock(),
                )
                if self.store.shared:  # the other instances read the file from the store
                    store_reference_file(
                        self.store, sha256=ref.sha256, name=Path(ref.path).name,
                        content=Path(ref.path).read_bytes(), now=self.clock(),
                    )
        with self._swap_lock:  # the last swap to take it is the one in use, all of it
            self.use_prepared(model, pm)
            if lr is not None:
                assert self.labels is not None
                _warn_label(lr)
                self.labels.set_reference(model, lr)
            self._redecide_probabilities(model, ref)
        return pm

    def label_reference_warning(self, model: str) -> str | None:
        """The WARNING of ``model``'s reference in use for the label join (the label column
        the config names is missing from the file, or holds no label), else None (also for
        a model that joins no labels). It names the file by its full path."""
        jm = self.labels.models.get(model) if self.labels is not None else None
        return jm.reference.warning if jm is not None else None

    def _redecide_probabilities(self, model: str, ref: ReferenceData) -> None:
        """Decide again whether ``model``'s scores are probabilities, from its new reference
        ``ref`` (a no-op when ``performance.probabilities`` sets it or the answer stays):
        the decoder (scores outside [0, 1]: dead letters or kept) and the label join (log
        loss and Brier score) follow from the next batch on. Logged once per change.
        Called with :attr:`_swap_lock` held: the decoder is built from every model's schema,
        so two swaps at once would otherwise install one built before the other's change."""
        rt = self.models[model]
        probs = scores_are_probabilities(rt.config, ref.columns)
        if probs == self.probabilities.get(model):
            return
        log.info("model %s: with reference %s, scores are %s (were %s)", model, Path(ref.path).name,
                 _probabilities_text(probs, rt.config), _probabilities_text(self.probabilities.get(model), rt.config))
        self.probabilities[model] = probs
        rt.schema = dataclasses.replace(rt.schema, probabilities=bool(probs))
        self.decoder = self._build_decoder()
        if self.labels is not None:
            self.labels.set_probabilities(model, probs)

    def use_prepared(self, model: str, pm: PreparedModel) -> None:
        """Judge ``model``'s next windows with ``pm`` (a new reference, or new drift settings
        on SIGHUP); rolling/seasonal members stay, their seed and thresholds change."""
        rt = self.models[model]
        _warn_alpha(pm, self._limits_told)  # new drift settings or a new reference: the reachable level moves
        rt.config = pm.config
        rt.prepared = pm
        assert rt.references is not None
        rt.references.rebase(pm)


def _probabilities_text(probs: bool | None, m: ModelConfig) -> str:
    """How a decision of :func:`scores_are_probabilities` reads in a log line."""
    if probs is None:
        return f"undecided (the reference has no finite {m.prediction} score: each window decides)"
    what = ("probabilities: one outside [0, 1] is a dead letter" if probs
            else "not probabilities: no log loss or Brier score")
    return f"{what} (the reference's {m.prediction} column; set performance.probabilities to decide)"


def _warn_alpha(pm: PreparedModel, told: set[tuple[str, str, str]]) -> None:
    """Log a WARNING when the model's calibrated ``drift.alpha`` cannot be reached, and one
    per column whose calibrated threshold the reference breaks (:meth:`PreparedModel.limit_warnings`).
    ``told``: the (model, reference hash, text) column warnings logged already, updated: a
    column's warning shows once per reference (a reload with the same reference and
    settings repeats none)."""
    text = pm.alpha_warning()
    if text:
        log.warning("%s", text)
    for line in pm.limit_warnings():
        key = (pm.config.name, pm.reference.sha256, line)
        if key not in told:
            told.add(key)
            log.warning("%s", line)


def judge_window(rt: ModelRuntime, w: OpenWindow, now: datetime, cols: WindowColumns | None = None) -> WindowFigures:
    """A closed window's figures against the reference its mode picks; the window
    then becomes a candidate member of later windows' references. ``cols``: see
    :func:`compute_figures`."""
    assert rt.references is not None
    by = rt.config.window.by
    key = window_key(rt.config.name, by, w)
    figs = compute_figures(rt.references.for_window(key), w, by=by, now=now, cols=cols)
    if rt.references.active:
        rt.references.observe(key, w.columns() if cols is None else {c: cols[c] for c in cols}, figs)
    return figs


def _warn_label(lr: LabelledReference) -> None:
    """Log the WARNING of a reference lacking the label column the config names."""
    if lr.warning:
        log.warning("%s", lr.warning)


def check_label_rules(config: Config, refs: Mapping[str, Any]) -> None:
    """A rule on ``label_drift`` needs labels in the reference, one on ``estimated_*`` (or
    its ``*_estimation_error``) labels and scores to calibrate on, a relative rule on a
    performance figure the reference's own figure: else the figure (or its threshold)
    never exists and the rule never fires. Raises :class:`ReferenceError` naming the rule."""
    from monitor.references.load import ReferenceError  # noqa: PLC0415

    for i, rule in enumerate(config.rules):
        m = rule.metric
        if m == "label_drift":
            need, what = (lambda r: r.labels is not None), "a label column"
        elif m.startswith("estimated_") or m.endswith("_estimation_error"):
            need, what = (lambda r: r.calibrator is not None), "labels and scores (to calibrate the estimate)"
        elif rule.relative and m in PERFORMANCE_METRICS:
            need = lambda r, m=m: (DATASET, m) in r.figures  # noqa: E731
            what = (f"labels and predictions giving its own {m} (what the relative threshold multiplies;"
                    " empty, non-numeric or constant labels give none)")
        else:
            continue
        targets = [rule.model] if rule.model is not None else sorted(refs)
        ok = [t for t in targets if t in refs and need(refs[t])]
        if not ok:
            model = config.model(targets[0]) if targets and targets[0] in refs else None
            path = model.reference if model is not None else "(no reference)"
            label = model.label if model is not None else None
            raise ReferenceError(
                path, f"rules[{i}] ({rule.name}) uses {m}, which needs {what} in the reference of"
                f" model {targets[0] if targets else '?'}: add them, or drop the rule", label,
            )


def restore_references(runtimes: Any, store: Store) -> None:
    """Reload rolling/seasonal reference members written before a restart."""
    for rt in runtimes:
        assert rt.references is not None
        n = rt.references.restore(store)
        if n:
            log.info("model %s: %d reference member windows restored", rt.config.name, n)


def _offsets(first: Mapping[int, int]) -> str:
    """``{0: 600, 2: 15}`` -> ``600 (partition 0), 15 (partition 2)``; one partition: ``600``."""
    if len(first) == 1:
        return str(next(iter(first.values())))
    return ", ".join(f"{o} (partition {p})" for p, o in sorted(first.items()))
