"""The label join: predictions and labels meet in the store; performance windows follow.

Between two flushes the join only buffers what the pipeline hands it: the fresh
predictions of models with performance enabled (after version and segment caps,
so windows keep the drift windows' identity) and the decoded labels. At flush,
inside the pipeline's one transaction, :meth:`LabelJoin.write`:

1. inserts the new predictions (duplicate ids: the first stays, counted), joining
   labels that waited for them; which ids are held is known in memory
   (:mod:`monitor.labels.held_ids`, built from the table when first needed), each find
   confirmed by a key read;
2. applies the labels: a held prediction gets its label (a further label for the
   same id is a duplicate, counted; the one with the latest ``ts`` wins, ties go
   to the later record); a label later than its prediction's ``ts + ttl`` is
   counted as expired and not used; a label without its prediction waits
   (``early_ttl``);
3. (re)computes the performance windows of the slots that are due (mature:
   ``end + delay <= clock`` or coverage reached; or holding late labels and last
   computed ``recompute_interval`` ago), and hands each window to the listener
   (the alert engine) in the same transaction;
4. prunes what left the TTL, counting expired predictions and unmatched labels, and
   keeps at most ``labels.max_early`` early labels per model in the store (on a shared
   one, whichever instances wrote them; those beyond are dropped,
   stamped ahead of the wall clock first, then the oldest; counted: labels for ids that never come would otherwise grow the store
   for a whole ``early_ttl``). Nothing is held in memory per early label.

The buffers never force a flush of their own: they ride the next one (a closed
window, or ``kafka.commit_interval``), with the offsets they account for. The
(re)computations of step 3 take at most :data:`COMPUTE_SHARE` of the wall time;
due windows beyond that wait for a later flush (first computations first).

The *clock* of a model is the newest event time seen on either stream (durable),
so expiry and maturity do not depend on when the daemon runs; an event time ahead of
min(its record's timestamp, the wall clock) moves it no further than that
(:func:`monitor.ingest.event_time.watermark_times`), and a time moves it only once a
second event (of either stream) reached it: the clock is the second-highest time seen,
:attr:`LabelJoin.front_ms` the highest (:func:`monitor.ingest.event_time.vouch`). One
event stamped ahead, at the live edge or in a backlog read hours behind the wall clock,
must not mature windows, expire predictions or give up early labels before their
time; the stream's own progress moves the clock one event later. A model idle for
its ``window.idle_timeout`` lets the wall clock mature its windows (like idle
drift windows), never expire them.

Crash safety: the label topic's consumed offsets are part of the durable state
written with the join, and records before them are skipped after a restart; the
predictions' replayed rows are skipped too (they are in the join already).

Several instances on one store: both topics are keyed by model and have the same
partition count, so partition ``p`` of either topic carries the same models, and
Kafka's range assignor gives both to one instance. A model's *home* is the
partition its records come from; its durable join state (the clock) and the labels
topic's offset of ``p`` are kept in the row of ``p`` in ``stream_partitions``
(:meth:`partition_state`), which the pipeline writes fenced by its claim epoch in
the flush transaction. On a shared store an instance writes the join of the
models whose home it holds (:meth:`write`'s ``held``) and nothing else: whoever
holds the claim of ``p`` is the only writer of its models' join rows, so a
hand-over moves them as exactly as the windows (:mod:`storage.stream`). What
has no home among the owned partitions (a labels topic with more partitions, on
a store of one's own) is kept in the ``stream_state`` row ``labels`` as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from detectors.estimation import ESTIMATED_METRICS, estimate_binary
from monitor.config import Config, ModelConfig
from monitor.ingest.batch import ColumnBatch, next_offsets
from monitor.ingest.event_time import NO_TIME, vouch
from monitor.ingest.skipped import SkippedOffsets, went_back
from monitor.labels.decode import LabelBatch, LabelDecoder, LabelSpec
from monitor.labels.figures import ABSENT, SEP, PerformanceSpec, slot_figures
from monitor.labels.held_ids import HeldIds, build
from monitor.labels.reference import LabelledReference
from monitor.windows.model_windows import OpenWindow
from storage import labels as db
from storage.db import StorageError, Store
from storage.records import DATASET, MetricRow, WindowKey, iso, parse_iso
from storage.stream import replay_after_commit

log = logging.getLogger("driftwarden.labels")

STATE_NAME = "labels"
#: slots (re)computed per flush at most; the rest follow at the next flush
MAX_SLOTS_PER_FLUSH = 16
#: performance (re)computations may take this share of the daemon's wall time: labels
#: that keep landing in many windows must not starve ingest (the rest waits its turn)
COMPUTE_SHARE = 0.25
#: seconds of computation that can be saved up while there is nothing to compute
COMPUTE_BURST_S = 5.0
#: seconds between two log lines about early labels dropped past ``labels.max_early``, per model
EARLY_DROP_LOG_S = 60.0
#: SQLite page cache of the store's connection with the join on (KiB): labels land on
#: rows of the join table spread over their delay, whose pages then stay in memory
#: instead of being re-read per label
CACHE_KIB = 32 * 1024


class PerformanceListener(Protocol):
    """Called inside the flush transaction for each (re)computed performance window."""

    def __call__(self, key: WindowKey, metrics: list[MetricRow], model: ModelConfig, reference: Mapping[tuple[str, str], float]) -> None: ...


@dataclass
class Sealed:
    """What one flush attempt writes of the join (:meth:`LabelJoin.seal`)."""

    #: the buffered batches, by id (held: an id stays theirs)
    batches: dict[int, Any]
    #: the labels topic's positions
    positions: dict[int, int]
    #: whether the join wanted a flush
    dirty: bool
    #: per model: the clock its prune used in this attempt
    pruned: dict[str, int] = field(default_factory=dict)


@dataclass
class _Predictions:
    event_id: np.ndarray
    ts: np.ndarray
    version: np.ndarray
    segments: list[str]
    prediction: list[Any]


@dataclass
class JoinModel:
    """One model's side of the join."""

    config: ModelConfig
    spec: PerformanceSpec
    size_ms: int
    step_ms: int
    reference: LabelledReference = field(default_factory=LabelledReference)

    @property
    def per_row(self) -> int:
        return self.size_ms // self.step_ms

    def slot_starts(self, ts: np.ndarray) -> list[np.ndarray]:
        """For each of the ``per_row`` windows a row belongs to, the window starts
        (as :class:`monitor.windows.model_windows.ModelWindows` assigns them)."""
        newest = (ts // self.step_ms) * self.step_ms
        return [newest - j * self.step_ms for j in range(self.per_row)]


def _ms(td: timedelta) -> int:
    return round(td.total_seconds() * 1000)


def _ms_of(text: str) -> int:
    return round(parse_iso(text).timestamp() * 1000)


class LabelJoin:
    """The label side of the pipeline (see the module documentation)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Callable[[], datetime],
        on_performance: PerformanceListener | None = None,
        references: Mapping[str, LabelledReference] | None = None,
        probabilities: Mapping[str, bool | None] | None = None,
        slot_savepoint: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        """``probabilities``: per model, whether its scores are probabilities
        (:func:`monitor.ingest.schema.scores_are_probabilities`; absent: its
        ``performance.probabilities``). ``slot_savepoint``: see :attr:`slot_savepoint`."""
        self.config = config
        self.store = store
        self.wall = clock
        self.on_performance = on_performance
        #: per model: how far its predictions have come (epoch ms; the drift windows' event
        #: clock, set by the pipeline; None: not known yet). Coverage matures only a window
        #: the predictions passed: labels come back ahead of a predictions stream read
        #: behind them and move the join's clock past windows still taking predictions
        self.prediction_clock: Callable[[str], int | None] | None = None
        #: opened around the store savepoint of each time slot's performance windows; when
        #: the slot raises (logged and skipped), it puts back what ``on_performance``'s
        #: listener remembered of the slot (the alert engine's ``memory_savepoint``: a
        #: clear held by an earlier window of the slot is not counted by ``finish_slots``)
        self.slot_savepoint: Callable[[], AbstractContextManager[object]] = slot_savepoint or nullcontext
        store.page_cache(CACHE_KIB)
        lab = config.labels
        self.ttl_ms = _ms(lab.ttl)
        self.early_ttl_ms = _ms(lab.early_ttl)
        self.max_early = lab.max_early
        self.delay_ms = _ms(lab.delay)
        self.coverage = lab.coverage
        self.recompute_interval = lab.recompute_interval
        self.topic = config.kafka.labels_topic
        self.models: dict[str, JoinModel] = {}
        for m in config.models:
            if not m.performance.enabled:
                continue
            probs = (probabilities or {}).get(m.name, m.performance.probabilities)
            self.models[m.name] = JoinModel(
                m, PerformanceSpec.from_config(m, lab, probabilities=probs), _ms(m.window.size), _ms(m.window.step),
                (references or {}).get(m.name, LabelledReference()),
            )
        self.decoder = LabelDecoder(
            {n: LabelSpec.from_config(jm.config) for n, jm in self.models.items()},
            [m.name for m in config.models],
            max_message_bytes=config.kafka.max_message_bytes,
            max_future_skew_ms=int(config.kafka.max_future_skew.total_seconds() * 1000),
            model_field=config.model_field,
        )
        for name, jm in self.models.items():
            self.decoder.set_classes(name, jm.reference.classes)
        #: next offset to consume per partition of the labels topic, as reflected in memory
        self.positions: dict[int, int] = {}
        #: first offset NOT reflected in durable state (records before it are skipped)
        self.replay_before: dict[int, int] = {}
        #: per labels partition, the offset the consumer reads next as far as the join
        #: knows (where the daemon seeked it, then after the last record read): a record
        #: before it means the partition's log went back (see :meth:`log_went_back`)
        self.fetch_next: dict[int, int] = {}
        #: where a gap past :attr:`fetch_next` is reported (labels deleted unread); None:
        #: not looked for (set by :meth:`monitor.service.pipeline.Pipeline.watch_skipped`)
        self.skipped: SkippedOffsets | None = None
        #: per model: the join's clock, the newest event time two events of either stream
        #: reached (ms; absent before the second event; see the module documentation)
        self.clock_ms: dict[str, int] = {}
        #: per model: the newest (capped) event time seen on either stream (ms), the clock's
        #: candidate; durable with the clock
        self.front_ms: dict[str, int] = {}
        #: per model: the wall clock (ms) that may mature windows while the model is idle
        self.idle_ms: dict[str, int] = {}
        #: per model: the partition its records are read from (its state lives in that
        #: partition's row; see the module documentation)
        self.home: dict[str, int] = {}
        #: per model: the clock of its last prune that committed (restored: the durable clock,
        #: written with that prune); windows that ended more than ttl before it are final
        self._pruned_clock: dict[str, int] = {}
        #: labels-topic offsets of the older single-row state, until a partition's row has its own
        self._legacy_offsets: dict[int, int] = {}
        self.last_activity: dict[str, datetime] = {}
        self._preds: dict[str, list[_Predictions]] = {}
        self._labels: dict[str, list[LabelBatch]] = {}
        #: per model: where its held predictions are, by id (built from the table when first
        #: needed; dropped when a flush did not commit, or the model moved to another instance)
        self._held_ids: dict[str, HeldIds] = {}
        #: models whose id index the flush attempt in progress changed (added to, pruned)
        self._ids_changed: set[str] = set()
        #: per model: how many labels wait in ``label_early`` (read from the table when first
        #: needed, then kept up to date by this instance's writes; dropped when a flush did not
        #: commit or the model moved; never kept on a shared store, see :meth:`_cap_early`)
        self._early_count: dict[str, int] = {}
        #: per model: early labels dropped past max_early not logged yet, and when (monotonic
        #: seconds) the last line about them was logged
        self._early_dropped: dict[str, tuple[int, float | None]] = {}
        self._lookup_misses = False
        #: called while a long piece of work advances (the id index built from the table:
        #: 0.7 s a million), so the daemon's liveness checks do not take it for a stall
        self.progress: Callable[[], object] = lambda: None
        self._dirty = False
        #: what the flush attempt in progress (or of unknown outcome) writes
        self._sealed: Sealed | None = None
        #: slots were left due at the last flush, or may become due by the wall clock
        self._owed = False
        #: seconds of computation available now (see COMPUTE_SHARE), and when it was topped up
        self._budget = COMPUTE_BURST_S
        self._budget_at: datetime | None = None
        #: the share of the time (:data:`COMPUTE_SHARE`) the (re)computations may take; None:
        #: no cap (a replay: no live stream waits, and its flush times are event times)
        self.compute_share: float | None = COMPUTE_SHARE
        #: the last flush left slots due (:data:`MAX_SLOTS_PER_FLUSH`, or the time share used
        #: up): a batch run (``replay``) flushes again at once (:meth:`want_flush`)
        self.due_left = False
        #: the stream has ended (:meth:`finish`): every slot holding predictions is due
        self._finished = False

    @property
    def enabled(self) -> bool:
        return bool(self.models) and self.topic is not None

    def set_reference(self, model: str, ref: LabelledReference) -> None:
        jm = self.models.get(model)
        if jm is not None:
            jm.reference = ref
            self.decoder.set_classes(model, ref.classes)

    def set_probabilities(self, model: str, probabilities: bool | None) -> None:
        """Whether ``model``'s scores are probabilities, decided again (a new reference):
        log loss and Brier score of windows computed from now on follow it. None: its
        ``performance.probabilities`` (each window decides when that is unset too)."""
        jm = self.models.get(model)
        if jm is not None:
            probs = jm.config.performance.probabilities if probabilities is None else probabilities
            jm.spec = dataclasses.replace(jm.spec, probabilities=probs)

    def reference_metrics(self, model: str) -> dict[tuple[str, str], float]:
        """The reference's own performance figures (also under ``estimated_<figure>``),
        for rules with relative thresholds."""
        jm = self.models.get(model)
        if jm is None:
            return {}
        out = dict(jm.reference.figures)
        out.update({(c, f"estimated_{m}"): v for (c, m), v in jm.reference.figures.items() if m in ESTIMATED_METRICS})
        return out

    def estimates(self, model: str, w: OpenWindow) -> list[MetricRow]:
        """Estimated performance of a closed window from its scores (CBPE), for binary
        score models whose reference holds labels; empty otherwise."""
        jm = self.models.get(model)
        if jm is None or jm.reference.calibrator is None or w.rows == 0:
            return []
        scores = w.columns().get(jm.config.prediction)
        if scores is None:
            return []
        est = estimate_binary(jm.reference.calibrator, scores, threshold=jm.spec.threshold)
        return [
            MetricRow(DATASET, f"estimated_{m}", v) for m, v in est.as_dict().items() if v == v
        ]

    # -- hot path -------------------------------------------------------------------

    def add_predictions(self, model: str, batch: ColumnBatch, replay_before: Mapping[int, int] | None) -> None:
        """Buffer the fresh rows of a (capped) prediction batch of ``model``."""
        jm = self.models.get(model)
        if jm is None or len(batch) == 0:
            return
        fresh = np.ones(len(batch), dtype=bool)
        if replay_before:
            for p, o in replay_before.items():
                fresh &= ~((batch.partition == p) & (batch.offset < o))
        if not fresh.all():
            if not fresh.any():
                return
            batch = batch.take(fresh)
        segs = self._segments(jm, batch)
        # NaN scores are stored as NULL (by SQLite itself; by storage.labels on PostgreSQL)
        values: list[Any] = batch.columns[jm.config.prediction].tolist()
        if jm.spec.kind == "multiclass":
            values = held_classes(values, jm.config.limits.max_value_length)
        self._preds.setdefault(model, []).append(
            _Predictions(batch.event_id, batch.ts_ms, batch.version, segs, values)
        )
        self.home.setdefault(model, int(batch.partition.min()))
        self._advance(model, batch.wm_times())
        self._dirty = True

    @staticmethod
    def _segments(jm: JoinModel, batch: ColumnBatch) -> list[str]:
        names = jm.spec.segments
        if not names:
            return [""] * len(batch)
        if len(names) == 1:
            return [ABSENT if v is None else v for v in batch.segments[names[0]].tolist()]
        cols = [batch.segments[s].tolist() for s in names]
        return [SEP.join(ABSENT if v is None else v for v in row) for row in zip(*cols, strict=True)]

    def add_labels(self, batches: Mapping[str, LabelBatch]) -> None:
        for model, b in batches.items():
            if len(b):
                self._labels.setdefault(model, []).append(b)
                self.home.setdefault(model, min(b.partition))
                self._advance(model, b.wm_times())
                self._dirty = True

    def _advance(self, model: str, times: np.ndarray) -> None:
        """Move ``model``'s clock by a batch's times (each event's time as it may move
        clocks, epoch ms, in consumption order): to the newest two events reached."""
        _before, front, clock = vouch(times, self.front_ms.get(model, NO_TIME), self.clock_ms.get(model, NO_TIME))
        if front > NO_TIME:
            self.front_ms[model] = front
        if clock > self.clock_ms.get(model, NO_TIME):
            self.clock_ms[model] = clock
        self.last_activity[model] = self.wall()
        self.idle_ms.pop(model, None)

    def reading_from(self, partition: int, offset: int) -> None:
        """The daemon seeked labels ``partition`` to ``offset``: its next record is there."""
        self.fetch_next[partition] = offset

    def log_went_back(self, records: list[Any]) -> None:
        """Records of a labels partition that begin before where its consumer was reading
        (:attr:`fetch_next`): its log went back, the labels topic deleted and recreated
        or its records deleted (Kafka then resets the consumer to ``auto_offset_reset``).
        Its offsets name other records now: its replay boundary and position are dropped,
        so its labels are joined from where they begin; without this they were all
        skipped as "already stored" (:meth:`fresh`) until the new log passed the old
        one's end. The predictions held for a label stay: their labels may still come.
        Kafka hands each partition's records in offset order: one comparison per
        partition and poll. Records that begin more than ``MARKER_GAP`` offsets after it
        are a gap, handed to :attr:`skipped` (see :mod:`monitor.ingest.skipped`)."""
        for p, first, expected in went_back(records, self.fetch_next, self.skipped, self.topic):
            log.error(
                "labels topic %s partition %d: offset %d read where offset %d was next: its log"
                " went back (the topic was deleted and recreated, or its records deleted); its"
                " labels are joined as new from offset %d", self.topic, p, first, expected, first,
            )
            self.replay_before.pop(p, None)
            self.positions[p] = first
        self.fetch_next.update(next_offsets(records))

    def fresh(self, records: list[Any]) -> list[Any]:
        """The records not yet reflected in durable state (a restart skips the others)."""
        if not self.replay_before:
            return records
        return [r for r in records if r.offset >= self.replay_before.get(r.partition, -1)]

    def advance_positions(self, records: list[Any]) -> None:
        for r in records:
            if r.offset + 1 > self.positions.get(r.partition, -1):
                self.positions[r.partition] = r.offset + 1
        self._dirty = True

    def touch(self) -> None:
        """Consumption is paused (Kafka or storage away): not an idle model."""
        now = self.wall()
        for name in self.last_activity:
            self.last_activity[name] = now
        self.idle_ms.clear()

    def excuse(self, blocked: timedelta) -> None:
        """The consumer loop was held up for ``blocked``: not idle time (see
        :meth:`monitor.service.pipeline.Pipeline.excuse`); capped at now."""
        now = self.wall()
        for name, last in self.last_activity.items():
            self.last_activity[name] = min(now, last + blocked)

    def want_flush(self) -> None:
        """Have the next flush run the join's computations even with nothing new buffered
        (a batch run draining :attr:`due_left`)."""
        self._dirty = True

    def finish(self) -> None:
        """The stream has ended for good (the end of a replay's files): from the next flush
        on, every slot holding predictions is due whatever its delay, coverage or idle time,
        and a slot labelled since its computation is recomputed at once (no
        ``recompute_interval`` wait), so the stored figures are those of all the labels, as
        a live daemon's are once a quiet stream's windows all matured. Flush until
        :attr:`due_left` is False."""
        self._finished = True
        self._dirty = True

    def tick(self) -> None:
        """Let idle models mature their windows by the wall clock; due recomputes run at the next flush."""
        now = self.wall()
        for name, jm in self.models.items():
            timeout = jm.config.window.idle_timeout
            last = self.last_activity.get(name)
            if timeout is not None and last is not None and now - last >= timeout:
                self.idle_ms[name] = int(now.timestamp() * 1000)
        if self._owed or self.idle_ms:
            self._dirty = True

    # -- undo (poison isolation) ------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        return {
            "preds": {m: len(v) for m, v in self._preds.items()},
            "labels": {m: len(v) for m, v in self._labels.items()},
            "positions": dict(self.positions),
            "clock": dict(self.clock_ms),
            "front": dict(self.front_ms),
            "activity": dict(self.last_activity),
            "idle": dict(self.idle_ms),
            "home": dict(self.home),
            "dirty": self._dirty,
        }

    def rollback(self, cp: dict[str, Any]) -> None:
        for buf, key in ((self._preds, "preds"), (self._labels, "labels")):
            for m in list(buf):
                keep = cp[key].get(m, 0)
                del buf[m][keep:]
                if not buf[m]:
                    del buf[m]
        self.positions = cp["positions"]
        self.clock_ms = cp["clock"]
        self.front_ms = cp["front"]
        self.last_activity = cp["activity"]
        self.idle_ms = cp["idle"]
        self.home = cp["home"]
        self._dirty = cp["dirty"]

    # -- durability ---------------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        return bool(self._preds or self._labels)

    @property
    def wants_flush(self) -> bool:
        return self._dirty

    def held(self, owned: Iterable[int]) -> list[str]:
        """The models whose join this instance writes: on a shared store those whose home
        is among the ``owned`` partitions (their writer is fenced by its claim); on a store
        of one's own, every model."""
        if not self.store.shared:
            return list(self.models)
        mine = set(owned)
        return [m for m in self.models if self.home.get(m) in mine]

    def write(self, now: datetime, closed: Sequence[WindowKey] = (), held: Iterable[str] | None = None) -> int:
        """Everything buffered, due computations and pruning; call inside the flush
        transaction. ``closed``: the drift windows stored in the same flush (a slot
        computed before its drift window closed is recomputed, for the estimation
        error). ``held``: the models to write (see :meth:`held`; None: all). Returns the
        number of performance windows written."""
        written = 0
        owed = False
        self.due_left = False
        mine = set(self.models if held is None else held)
        for key in closed:
            if key.model in mine and key.segment == "":
                db.mark_dirty(self.store, key.model, _ms_of(key.start), _ms_of(key.end))
        for name, jm in self.models.items():
            if name not in mine:
                continue
            counts: dict[str, int] = {}
            slots: dict[tuple[int, int], list[int]] = {}
            self._write_predictions(jm, counts, slots)
            self._write_labels(jm, counts, slots)
            if slots:
                db.add_to_slots(
                    self.store, name, [(s, e, v[0], v[1], bool(v[2])) for (s, e), v in sorted(slots.items())]
                )
            written += self._compute_due(jm, now)
            self._prune(jm, counts)
            db.add_counters(self.store, name, counts)
            owed = owed or db.slots_waiting(self.store, name) > 0
        self._owed = owed
        return written

    def seal(self) -> Sealed:
        """A flush attempt begins: it writes what is buffered now. Returns that, to finish
        the attempt with (:meth:`committed` or :meth:`rolled_back`) once its outcome is
        known, which may be after more was buffered (see ``Pipeline.flush``)."""
        bufs = [b for per_model in (self._preds, self._labels) for bs in per_model.values() for b in bs]
        self._sealed = Sealed({id(b): b for b in bufs}, dict(self.positions), self._dirty)
        self._dirty = False
        self._ids_changed = set()
        return self._sealed

    def committed(self, sealed: Sealed) -> None:
        """The flush attempt ``sealed`` committed: what it wrote is durable now (what was
        buffered since stays)."""
        for per_model in (self._preds, self._labels):
            for m in list(per_model):
                kept = [b for b in per_model[m] if id(b) not in sealed.batches]
                if kept:
                    per_model[m] = kept  # type: ignore[assignment]
                else:
                    del per_model[m]
        self.replay_before = replay_after_commit(self.replay_before, self.positions, sealed.positions)
        for m, clock in sealed.pruned.items():
            self._pruned_clock[m] = max(clock, self._pruned_clock.get(m, clock))
        self._sealed = None

    def rolled_back(self, sealed: Sealed) -> None:
        """The flush attempt ``sealed`` did not commit: what it wrote is still to write."""
        self._dirty = self._dirty or sealed.dirty
        # an id index the attempt changed may hold predictions that are not in the table, or
        # miss restored ones (a prune rolled back): built again from it when next needed
        for model in self._ids_changed:
            self._held_ids.pop(model, None)
        self._ids_changed = set()
        # the counts of waiting labels included the attempt's writes: read again when needed
        self._early_count.clear()
        self._sealed = None

    def _leave_before(self, jm: JoinModel, clock: int | None) -> int | None:
        """Predictions before this event time leave the join at a prune on ``clock``: every
        window they belong to ended more than ``ttl`` before it (None: no clock)."""
        if clock is None:
            return None
        a = ((clock - self.ttl_ms - jm.size_ms) // jm.step_ms) * jm.step_ms
        return a + jm.step_ms

    def _final_end(self, jm: JoinModel, earliest_ms: int) -> int | None:
        """Slots ending at or before this are final: they ended more than ``ttl`` before the
        clock of the model's last committed prune, which dropped them and their rows. A
        prediction arriving that late must not count in them: its slot would be computed
        again from what is left of its rows and replace the window's figures (one late
        record erased a computed window's). The clock of this flush is not used: a window
        that turns final in it is computed with its rows before they leave. Nor is a slot
        from the oldest one still owing figures on (the prune keeps those and their rows:
        a late prediction still counts there). ``earliest_ms``: the batch's earliest event
        time (the store is asked for owed slots only when a slot may be final)."""
        clock = self._pruned_clock.get(jm.config.name)
        if clock is None:
            return None
        end = clock - self.ttl_ms
        if earliest_ms < end:
            owed = db.first_owed_start(self.store, jm.config.name)
            if owed is not None:
                end = min(end, owed + jm.size_ms - 1)  # s + size <= end: s < owed as well
        return end

    def _bump(
        self, jm: JoinModel, slots: dict[tuple[int, int], list[int]], ts: np.ndarray, rows: int,
        labelled: np.ndarray | None, changes: bool, final_end: int | None = None,
    ) -> None:
        """Count ``rows`` (1 each) and ``labelled`` per slot of the rows at ``ts``; slots
        ending at or before ``final_end`` are left as they are."""
        if ts.shape[0] == 0:
            return
        lab = labelled if labelled is not None else np.zeros(ts.shape[0], dtype=bool)
        for starts in jm.slot_starts(ts):
            uniq, inv = np.unique(starts, return_inverse=True)
            n = np.bincount(inv, minlength=uniq.shape[0]) * rows
            k = np.bincount(inv, weights=lab.astype(np.float64), minlength=uniq.shape[0])
            for i, s in enumerate(uniq.tolist()):
                if final_end is not None and s + jm.size_ms <= final_end:
                    continue
                cell = slots.setdefault((s, s + jm.size_ms), [0, 0, 0])
                cell[0] += int(n[i])
                cell[1] += int(k[i])
                cell[2] |= int(changes)

    def _write_predictions(self, jm: JoinModel, counts: dict[str, int], slots: dict[tuple[int, int], list[int]]) -> None:
        bufs = self._preds.get(jm.config.name)
        if not bufs:
            return
        name = jm.config.name
        eids: list[str] = [e for b in bufs for e in b.event_id.tolist()]
        ts = np.concatenate([b.ts for b in bufs])
        ts_l: list[int] = ts.tolist()
        vers: list[str] = [v for b in bufs for v in b.version.tolist()]
        segs = [s for b in bufs for s in b.segments]
        preds = [p for b in bufs for p in b.prediction]
        n = len(eids)
        # the first of repeated ids in the batch (the same id later is a duplicate), less
        # the ids held already (the first prediction of an id stays)
        first = dict(zip(reversed(eids), range(n - 1, -1, -1), strict=True))
        held = self._held(name, list(first))
        if held:
            first = {e: i for e, i in first.items() if e not in held}
        leave = self._leave_before(jm, self._pruned_clock.get(name))
        late = 0
        if leave is not None and int(ts.min()) < leave:
            owed = db.first_owed_start(self.store, name)
            if owed is not None:  # the prune keeps rows from the oldest window owing figures on
                leave = min(leave, owed)
        if leave is not None and int(ts.min()) < leave:
            # every window of these ended more than ttl before the clock of the last
            # committed prune (final, see _final_end): they would leave the join at this
            # flush's prune. Not held at all, they cannot make the id index compact itself
            # (O(held ids)) at every flush.
            kept = {e: i for e, i in first.items() if ts_l[i] >= leave}
            late = len(first) - len(kept)
            first = kept
        keep = None if len(first) == n else np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
        sel = range(n) if keep is None else keep.tolist()
        early: dict[str, db.EarlyLabel] = {}
        if first and db.has_early_labels(self.store, name):
            early = db.early_labels(self.store, name, list(first))
        plain: Iterable[tuple[Any, ...]] = []
        labelled: list[tuple[Any, ...]] = []
        lab_mask = np.zeros(n, dtype=bool)
        if not early and keep is None:
            # the common case: rows made one at a time as SQLite binds them (no list of
            # 10k tuples for the garbage collector to walk)
            plain = zip(eids, vers, ts_l, segs, preds, strict=True)
            sel = range(0)
        else:
            plain = []
        for i in sel:
            row = (eids[i], vers[i], ts_l[i], segs[i], preds[i])
            e = early.get(eids[i])
            if e is None:
                plain.append(row)  # type: ignore[attr-defined]
            elif e.ts - ts_l[i] > self.ttl_ms:
                counts["expired_labels"] = counts.get("expired_labels", 0) + 1
                plain.append(row)  # type: ignore[attr-defined]
            else:
                labelled.append((*row, e.label, e.ts, e.pos))
                lab_mask[i] = True
        if early:
            db.delete_early_labels(self.store, name, list(early))
            self._count_early(name, -len(early))
        attempted = len(first)
        inserted = db.insert_predictions(self.store, name, plain, labelled)
        self._ids_changed.add(name)
        self._ids(name).add(list(first), [ts_l[i] for i in first.values()])
        counts["predictions"] = inserted + late
        counts["duplicate_predictions"] = n - inserted - late
        if late:
            counts["expired_predictions"] = counts.get("expired_predictions", 0) + late
        counts["joined"] = counts.get("joined", 0) + int(lab_mask.sum())
        idx = np.arange(n) if keep is None else keep
        final_end = self._final_end(jm, int(ts.min()))
        if inserted == attempted:
            self._bump(jm, slots, ts[idx], 1, lab_mask[idx], True, final_end)
        else:
            # rows were held already under their key (a table the id index did not know):
            # count those windows from the rows themselves
            starts = {int(s) for st in jm.slot_starts(ts[idx]) for s in np.unique(st).tolist()
                      if final_end is None or s + jm.size_ms > final_end}
            db.recount_slots(self.store, name, sorted((s, s + jm.size_ms) for s in starts))

    @property
    def lookup_misses(self) -> bool:
        """Whether another instance may store predictions whose labels this one joins (a
        shared store whose labels and predictions topics have different partition counts;
        set by the daemon at each assignment): a label whose id is not held in memory is
        then looked up in the store by id before it waits as early (a read of the model's
        held predictions)."""
        return self._lookup_misses

    @lookup_misses.setter
    def lookup_misses(self, on: bool) -> None:
        if self._lookup_misses and not on:
            # the indexes were built while another instance stored predictions, and learnt
            # of those only through lookups: built again from the store when next needed
            self._held_ids.clear()
        self._lookup_misses = on

    def held_id_memory(self) -> dict[str, tuple[int, int]]:
        """Per model whose id index is built: (entries, bytes) of the index, for
        ``/metrics`` (read from another thread: a copy of the mapping is iterated)."""
        return {m: (len(ids), ids.nbytes) for m, ids in list(self._held_ids.items())}

    def _ids(self, model: str) -> HeldIds:
        """``model``'s id index, built from the table when not held yet."""
        ids = self._held_ids.get(model)
        if ids is None:
            t0 = time.perf_counter()
            ids = self._held_ids[model] = build(db.held_ids(self.store, model), progress=self.progress)
            if len(ids) >= 100_000:
                log.info("model %s: %d held prediction ids indexed in %.1f s", model, len(ids), time.perf_counter() - t0)
        return ids

    def _held(self, model: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The held predictions among ``ids`` (see :func:`storage.labels.held_predictions`)."""
        return db.held_predictions(self.store, model, self._ids(model).candidates(ids))

    def _write_labels(self, jm: JoinModel, counts: dict[str, int], slots: dict[tuple[int, int], list[int]]) -> None:
        bufs = self._labels.get(jm.config.name)
        if not bufs:
            return
        name = jm.config.name
        best: dict[str, tuple[int, int, Any]] = {}
        #: the other labels of an id labelled more than once in this flush: one of them is
        #: used if the latest is expired (as if each had come in a flush of its own)
        others: dict[str, list[tuple[int, int, Any]]] = {}
        total = 0
        shift = db.POS_SHIFT
        for b in bufs:
            total += len(b)
            pos = [(p << shift) | o for p, o in zip(b.partition, b.offset, strict=True)]
            cands = zip(b.event_id, zip(b.ts, pos, b.label, strict=True), strict=True)
            if not best and len(set(b.event_id)) == len(b):
                best = dict(cands)  # no id twice: no comparison needed
                continue
            for eid, cand in cands:
                old = best.get(eid)
                if old is None:
                    best[eid] = cand
                    continue
                if cand[:2] > old[:2]:
                    best[eid], cand = cand, old
                others.setdefault(eid, []).append(cand)
        counts["labels"] = total
        counts["duplicate_labels"] = 0
        held = self._held(name, list(best))
        if self._lookup_misses and len(held) < len(best):
            found = db.held_predictions_by_id(self.store, name, [e for e in best if e not in held])
            if found:  # stored by another instance since this one built its index
                held.update(found)
                self._ids(name).add(list(found), [r[1] for r in found.values()])
        updates: list[tuple[Any, int, int, int, str]] = []
        new_ts: list[int] = []
        changed_ts: list[int] = []
        early: list[db.EarlyLabel] = []
        ttl = self.ttl_ms
        joined = expired = dups = 0
        for eid, cand in best.items():
            p = held.get(eid)
            more = others.get(eid) if others else None
            if p is None:
                ts, pos, lab = cand
                early.append(db.EarlyLabel(eid, lab, ts, pos))
                dups += len(more) if more else 0
                continue
            _eid, p_ts, p_label, p_label_ts, p_label_pos = p
            if more:
                live = [c for c in (cand, *more) if c[0] - p_ts <= ttl]
                expired += len(more) + 1 - len(live)
                if not live:
                    continue
                cand = max(live, key=lambda c: c[:2])
                dups += len(live) - 1
            ts, pos, lab = cand
            if ts - p_ts > ttl:
                expired += 1
            elif p_label is None:
                joined += 1
                updates.append((lab, ts, pos, p_ts, eid))
                new_ts.append(p_ts)
            else:
                dups += 1
                if (ts, pos) > (p_label_ts or 0, p_label_pos or 0):
                    updates.append((lab, ts, pos, p_ts, eid))
                    if lab != p_label:
                        changed_ts.append(p_ts)
        counts["expired_labels"] = counts.get("expired_labels", 0) + expired
        counts["joined"] = counts.get("joined", 0) + joined
        counts["duplicate_labels"] += dups
        db.set_labels(self.store, name, updates)
        self._bump(jm, slots, np.asarray(new_ts, dtype=np.int64), 0, np.ones(len(new_ts), dtype=bool), True)
        self._bump(jm, slots, np.asarray(changed_ts, dtype=np.int64), 0, None, True)
        if early:
            waiting = db.early_labels(self.store, name, [e.event_id for e in early])
            counts["duplicate_labels"] += len(waiting)
            counts["early"] = len(early) - len(waiting)
            db.upsert_early_labels(self.store, name, early)
            self._count_early(name, counts["early"])

    # -- performance windows ----------------------------------------------------------------

    def _compute_due(self, jm: JoinModel, now: datetime) -> int:
        name = jm.config.name
        share = self.compute_share
        if share is not None:
            if self._budget_at is not None:
                earned = max(0.0, (now - self._budget_at).total_seconds()) * share
                self._budget = min(COMPUTE_BURST_S, self._budget + earned)
            self._budget_at = now
            if self._budget <= 0:
                self.due_left = True
                return 0
        clock = max(self.clock_ms.get(name, NO_TIME), self.idle_ms.get(name, NO_TIME))
        ended_ms = self._ended_ms(name, clock)
        recompute_before = now - self.recompute_interval
        if self._finished:  # the stream ended: everything held is due, recomputes at once
            clock = ended_ms = 2**62
            recompute_before = datetime.max.replace(tzinfo=UTC)
        due = db.due_slots(
            self.store, name, clock_ms=clock, delay_ms=self.delay_ms, coverage=self.coverage,
            recompute_before=iso(recompute_before), limit=MAX_SLOTS_PER_FLUSH, ended_ms=ended_ms,
        )
        written = 0
        for i, slot in enumerate(due):
            if share is not None and self._budget <= 0:
                self.due_left = True
                break
            t0 = time.perf_counter()
            written += self._compute_slot(jm, slot.start, slot.end, now)
            db.mark_computed(self.store, name, slot.start, slot.end, now)
            if share is not None:
                self._budget -= time.perf_counter() - t0
            if i + 1 == MAX_SLOTS_PER_FLUSH:
                self.due_left = True  # perhaps more: the next flush tells
        return written

    def _ended_ms(self, name: str, clock: int) -> int:
        """How far ``name``'s windows have ended (epoch ms), for coverage maturity: the
        join's ``clock`` (both streams, or the wall clock when idle), no further than the
        predictions came (:attr:`prediction_clock`) unless the model is idle."""
        if self.prediction_clock is None or name in self.idle_ms:
            return clock
        came = self.prediction_clock(name)
        return NO_TIME if came is None else min(clock, came)

    def _compute_slot(self, jm: JoinModel, start: int, end: int, now: datetime) -> int:
        """Compute and store one slot's windows; a slot whose figures raise is logged and
        skipped (marked computed), so it cannot block the flush of everything else."""
        name = jm.config.name
        counts = db.slot_counts(self.store, name, start, end)
        rows = db.slot_labelled(self.store, name, start, end)
        try:
            # the listener's memory of the slot rolls back with the slot's writes
            with self.slot_savepoint(), self.store.transaction():
                estimates = None
                if jm.reference.calibrator is not None:
                    estimates = lambda ids: db.data_figures(self.store, ids, "estimated_")  # noqa: E731
                windows = slot_figures(
                    jm.spec, counts, rows, start, end, label_reference=jm.reference.labels, estimates=estimates,
                    classes=jm.reference.classes,
                )
                for key, metrics in windows:
                    db.write_performance(self.store, key, metrics, computed_at=now)
                    if self.on_performance is not None:
                        self.on_performance(key, metrics, jm.config, jm.reference.figures)
            return len(windows)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - one slot's data must not stop the others
            log.error("model %s: performance of window %s..%s failed; skipped", name, start, end, exc_info=exc)
            return 0

    def _prune(self, jm: JoinModel, counts: dict[str, int]) -> None:
        name = jm.config.name
        clock = self.clock_ms.get(name)
        if clock is None:
            return
        cutoff = self._leave_before(jm, clock)
        assert cutoff is not None
        if self._sealed is not None:
            self._sealed.pruned[name] = clock
        owed = db.first_owed_start(self.store, name)
        if owed is not None:
            cutoff = min(cutoff, owed)
        dropped, unlabelled = db.prune_predictions(self.store, name, cutoff)
        ids = self._held_ids.get(name)
        if dropped and ids is not None:
            self._ids_changed.add(name)
            ids.prune(cutoff, dropped)
        if unlabelled:
            counts["expired_predictions"] = counts.get("expired_predictions", 0) + unlabelled
        db.prune_slots(self.store, name, clock - self.ttl_ms)
        unmatched = db.prune_early_labels(self.store, name, clock - self.early_ttl_ms)
        if unmatched:
            self._count_early(name, -unmatched)
            counts["unmatched_labels"] = counts.get("unmatched_labels", 0) + unmatched
        if counts.get("early"):
            self._cap_early(name, counts)

    def _count_early(self, model: str, delta: int) -> None:
        """``delta`` labels of ``model`` started (> 0) or stopped (< 0) waiting in this flush
        attempt; a count not held yet is read from the table when next needed instead."""
        if model in self._early_count:
            self._early_count[model] += delta

    def _cap_early(self, model: str, counts: dict[str, int]) -> None:
        """Keep at most ``labels.max_early`` labels of ``model`` waiting: drop those beyond,
        stamped ahead of the wall clock first, then the oldest (by ``ts``, then position),
        counted as ``dropped_early_labels`` and logged at most once per
        :data:`EARLY_DROP_LOG_S` per model. Called when labels started waiting (the
        only way the count grows). On a store of one's own the count is read from the table
        once, then kept in memory (a read per flush would cost O(waiting labels)). On a
        shared store other instances may write the model's early labels too (its labels
        read from several partitions): the count is read every time, so the bound holds
        for the table, whoever inserted the rows; the flush holds the model's lock
        (:func:`storage.alerts.alert_lock_key`), so no other instance's early labels of
        the model are uncommitted meanwhile."""
        waiting = self._early_count.get(model)
        if waiting is None:
            waiting = db.count_early_labels(self.store, model)
            if not self.store.shared:
                self._early_count[model] = waiting
        excess = waiting - self.max_early
        if excess <= 0:
            return
        # those stamped ahead of the wall clock first: a flood of them would outlive every real one
        dropped = db.drop_oldest_early_labels(
            self.store, model, excess, future_after=int(self.wall().timestamp() * 1000))
        self._count_early(model, -dropped)
        counts["dropped_early_labels"] = counts.get("dropped_early_labels", 0) + dropped
        self._log_early_dropped(model, dropped)

    def _log_early_dropped(self, model: str, dropped: int) -> None:
        """Log the early labels dropped past the cap: at once, then at most once per
        :data:`EARLY_DROP_LOG_S` per model, with how many since the last line."""
        pending, last = self._early_dropped.get(model, (0, None))
        pending += dropped
        now = time.monotonic()
        if last is not None and now - last < EARLY_DROP_LOG_S:
            self._early_dropped[model] = (pending, last)
            return
        log.warning(
            "model %s: %d early labels dropped (those stamped ahead of the wall clock, then the oldest):"
            " more than labels.max_early = %d labels waited for their prediction (an unknown id, or a"
            " producer ahead of the predictions; counted as dropped_early_labels)", model, pending, self.max_early,
        )
        self._early_dropped[model] = (0, now)

    # -- state ------------------------------------------------------------------------------

    def partition_state(self, partition: int) -> dict[str, Any]:
        """What the row of ``partition`` keeps of the join: the labels topic's next offset
        of that partition (absent: nothing consumed yet) and the clocks of the models
        whose home it is (``clock``, and ``front`` where it differs: see the module
        documentation; absent, it is the clock)."""
        homed = [m for m, p in sorted(self.home.items()) if p == partition]
        out: dict[str, Any] = {"clock": {m: self.clock_ms[m] for m in homed if m in self.clock_ms}}
        front = {m: self.front_ms[m] for m in homed if self.front_ms.get(m, NO_TIME) != self.clock_ms.get(m, NO_TIME)}
        if front:
            out["front"] = front
        if partition in self.positions:
            out["offset"] = self.positions[partition]
        return out

    def remainder(self, owned: Iterable[int]) -> dict[str, Any]:
        """The state no owned partition's row keeps (the single ``labels`` row): offsets of
        labels partitions not owned, clocks of models without an owned home. Empty on a
        shared store, where records of partitions not owned are not processed."""
        if self.store.shared:  # one row for every instance would be overwritten by each
            return {}
        mine = set(owned)
        offsets = {str(p): o for p, o in sorted(self.positions.items()) if p not in mine}
        clock = {m: v for m, v in sorted(self.clock_ms.items()) if self.home.get(m) not in mine}
        front = {m: v for m, v in sorted(self.front_ms.items())
                 if self.home.get(m) not in mine and v != self.clock_ms.get(m, NO_TIME)}
        if not (offsets or clock or front):
            return {}
        out: dict[str, Any] = {"offsets": offsets, "clock": clock}
        if front:
            out["front"] = front
        return out

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Load the single-row state (``stream_state`` ``labels``: what no partition's row
        keeps, or all of it for a store written before rows kept it): where each labels
        partition resumes is then in :attr:`positions`. A partition's row, once claimed,
        takes precedence (:meth:`resume_partition`)."""
        if not state:
            return
        self.replay_before = {int(p): int(o) for p, o in state.get("offsets", {}).items()}
        self.positions = dict(self.replay_before)
        self._legacy_offsets = dict(self.replay_before)
        self.clock_ms = {str(m): int(v) for m, v in state.get("clock", {}).items()}
        # a state written before fronts were kept: the clock, in force already
        self.front_ms = {**self.clock_ms, **{str(m): int(v) for m, v in state.get("front", {}).items()}}
        self._pruned_clock = dict(self.clock_ms)
        # idle since the restart, not since the last event before it: a model that stays
        # quiet still matures its windows once its idle_timeout has passed
        now = self.wall()
        self.last_activity = {m: now for m in self.front_ms if m in self.models}

    def resume_partition(self, partition: int, state: Mapping[str, Any] | None) -> None:
        """Take over ``partition``'s join state from its row (just claimed): where its labels
        resume (records before are in the store already) and its models' clocks."""
        offset = (state or {}).get("offset", self._legacy_offsets.get(partition))
        self._legacy_offsets.pop(partition, None)
        if offset is not None:
            self.positions[partition] = self.replay_before[partition] = int(offset)
        now = self.wall()
        front = (state or {}).get("front", {})
        for m, v in (state or {}).get("clock", {}).items():
            if m in self.models:
                self.clock_ms[m] = self._pruned_clock[m] = int(v)
                self.front_ms[m] = int(front.get(m, v))
                self.home[m] = partition
                self.last_activity[m] = now
        for m, v in front.items():  # a model with one event so far: a front, no clock yet
            if m in self.models and m not in self.clock_ms:
                self.front_ms[m] = int(v)
                self.home[m] = partition
                self.last_activity[m] = now

    def forget(self, partitions: set[int]) -> list[str]:
        """Drop what is held for ``partitions`` (another instance owns them now): positions,
        buffered labels read from them, and everything of the models whose home they are
        (their next owner resumes them from the store). Returns those models."""
        for p in partitions:
            self.positions.pop(p, None)
            self.replay_before.pop(p, None)
            self.fetch_next.pop(p, None)
        gone = sorted(m for m, p in self.home.items() if p in partitions)
        for m in gone:
            for per_model in (self.home, self.clock_ms, self.front_ms, self.last_activity, self.idle_ms, self._preds, self._labels,
                              self._held_ids, self._pruned_clock, self._early_count):
                per_model.pop(m, None)  # type: ignore[attr-defined]
        sealed = self._sealed.batches if self._sealed is not None else {}
        for m, bufs in list(self._labels.items()):
            kept = []
            for b in bufs:
                rest = _without(b, partitions)
                if rest is not b and id(b) in sealed:
                    sealed[id(rest)] = rest  # what is left of it was written by the same attempt
                if len(rest):
                    kept.append(rest)
            if kept:
                self._labels[m] = kept
            else:
                del self._labels[m]
        return gone

    def release_partitions(self, keep: set[int]) -> list[int]:
        """Forget the labels partitions not in ``keep`` (moved to another group member)."""
        gone = sorted((set(self.positions) | set(self.replay_before)) - keep)
        for p in gone:
            self.positions.pop(p, None)
            self.replay_before.pop(p, None)
            self.fetch_next.pop(p, None)
        return gone

    def commit_offsets(self) -> dict[int, int]:
        """Offsets of the labels topic safe to commit: all that is durable."""
        return dict(self.replay_before)


def held_classes(values: list[Any], limit: int) -> list[Any]:
    """Predicted classes as the join holds them: one longer than ``limit`` (the models'
    ``limits.max_value_length``, which no label may pass: a longer one is a dead letter)
    becomes its first ``limit`` characters, ``…`` and 32 hex digits of its SHA-256. It
    still equals no label and no other class, so every figure is what it was, but a row
    held for ``labels.ttl`` costs at most ``limit + 33`` characters of it, not up to the
    message size cap (400 predictions of 500,000 characters held 200 MB)."""
    if all(type(v) is not str or len(v) <= limit for v in values):
        return values
    return [
        v if type(v) is not str or len(v) <= limit
        else f"{v[:limit]}\u2026{hashlib.sha256(v.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"
        for v in values
    ]


def _without(b: LabelBatch, partitions: set[int]) -> LabelBatch:
    """``b`` without the labels read from ``partitions``."""
    keep = [i for i, p in enumerate(b.partition) if p not in partitions]
    if len(keep) == len(b):
        return b
    return LabelBatch(
        b.model, [b.event_id[i] for i in keep], [b.label[i] for i in keep], [b.ts[i] for i in keep],
        [b.partition[i] for i in keep], [b.offset[i] for i in keep],
        wm=None if b.wm is None else [b.wm[i] for i in keep],
    )
