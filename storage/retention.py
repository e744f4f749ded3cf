"""Retention: the scheduled prune that keeps every table (and the file) bounded.

One place for every ``DELETE`` of old rows. Each table is pruned by age in
small batches; each batch is its own short transaction, and the prune pauses
between batches, so the consumer thread's flush never waits long on the shared
store lock. The batch size adapts so that one batch takes about
``batch_seconds``.

What is never deleted, whatever its age:

- alerts that are ``pending`` or ``firing``;
- deliveries not yet ``sent``/``dead``; deliveries that include a pending or
  firing alert (a resolution or reminder is threaded under them); the parent of
  a pending delivery; the newest retraining request per notifier and model (the
  cooldown is read from it);
- windows (and their figures) that a pending or firing alert points at
  (``last_window_id``);
- the reference in force per model (the newest registered), and any reference
  a stored window was judged against (``windows.reference``);
- the newest dead letter (the highest id: SQLite would give it to the next one).

Ages: windows and figures by ``computed_at`` (when they were stored, not their
event time, so replaying old data does not delete it at once), alerts by
``updated_at`` (resolved or inactive ones), silences by ``ends_at`` (with the
alerts' retention), deliveries by ``created_at``, dead letters by
``received_at`` (their per-minute counts in ``dead_letter_volume`` with them;
``dead_letter_totals`` is never pruned). A retention of ``None`` keeps a table
forever.

Clock steps: rows are deleted as of the wall clock, but never as of a time further
ahead than the prune can vouch for (:meth:`Pruner.as_of`): at a process's first prune,
:data:`MAX_CLOCK_LEAD` past the newest row stored; after that, the previous prune's
time plus the time elapsed since on the monotonic clock. A wall clock stepped forward
(a year, by an operator or a VM booting with a wrong clock) therefore deletes nothing
it would not have deleted anyway (a WARNING names the jump); one stepped back only
prunes less.

Window samples (``window_samples``, for reports) are bounded by count, not age:
the newest ``window_samples`` per model stay (:func:`trim_window_samples`, also
called by the flush that writes one, so the bound holds between prunes); a
sample goes with its window, and one whose window is gone is deleted.

After a prune, free pages are given back to the file system
(``PRAGMA incremental_vacuum``, in chunks) and the WAL is checkpointed and
truncated.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from storage.db import StorageError, Store
from storage.records import iso, parse_iso

log = logging.getLogger("driftwarden.retention")

#: Pages given back to the file system per vacuum step (4 MiB with 4 KiB pages).
VACUUM_PAGES_PER_STEP = 1024
#: Uploaded reference files not registered in ``references`` are removed only
#: after this long (an upload writes its file before it registers it).
ORPHAN_FILE_GRACE = timedelta(hours=1)
#: How far ahead of the newest row stored the wall clock may be at a process's first
#: prune before the prune stops trusting it (a clock stepped forward at boot must not
#: delete every row; a daemon stopped longer than this prunes as of this bound instead).
MAX_CLOCK_LEAD = timedelta(days=1)
#: Within a process, how far the wall clock may run ahead of the prune's monotonic
#: track before it counts as a step (NTP slewing moves it by seconds an hour).
CLOCK_SLACK = timedelta(minutes=1)
#: The tables whose stored times anchor the first prune: (table, column).
_STAMPED = (("windows", "computed_at"), ("alerts", "updated_at"), ("deliveries", "created_at"),
            ("dead_letters", "received_at"))
#: Names of uploaded reference files: ``<version>-<first 12 hex of sha256>.<ext>``.
_REFERENCE_FILE = re.compile(r"-([0-9a-f]{12})\.(csv|parquet)$")

_LIVE_ALERT_WINDOWS = (
    "SELECT last_window_id FROM alerts WHERE state IN ('pending', 'firing')"
    " AND last_window_id IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each table keeps its rows (``None``: forever).

    ``metrics`` may be shorter than ``windows`` (windows then stay without their
    figures), never longer: figures go with their window. ``references_dir`` is
    where uploaded reference files live (``state_dir/references``); files outside
    it are never deleted.
    """

    windows: timedelta | None = timedelta(days=90)
    metrics: timedelta | None = timedelta(days=90)
    alerts: timedelta | None = timedelta(days=365)
    deliveries: timedelta | None = timedelta(days=30)
    dead_letters: timedelta | None = timedelta(days=14)
    references_dir: Path | None = None
    #: window samples kept per model (newest windows first); None: no count bound
    window_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("windows", "metrics", "alerts", "deliveries", "dead_letters"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name}: expected a positive retention or None, got {value}")
        if self.windows is not None and (self.metrics is None or self.metrics > self.windows):
            raise ValueError("metrics: figures cannot be kept longer than their windows")
        if self.window_samples is not None and self.window_samples < 0:
            raise ValueError(f"window_samples: expected a count >= 0 or None, got {self.window_samples}")


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one prune run removed: rows per table, reference files, pages vacuumed."""

    started_at: datetime
    rows: dict[str, int]
    files: int = 0
    vacuumed_pages: int = 0
    checkpointed: bool = True
    seconds: float = 0.0
    stopped: bool = False

    @property
    def total(self) -> int:
        return sum(self.rows.values()) + self.files


@dataclass
class RetentionStats:
    """Running totals of the prune since the process started (thread-safe reads of ints).

    The daemon owns one; ``/metrics`` exports it.
    """

    runs: int = 0
    errors: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    vacuumed_pages: int = 0
    last_run_at: datetime | None = None
    last_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, report: PruneReport) -> None:
        with self._lock:
            self.runs += 1
            for table, n in report.rows.items():
                self.rows[table] = self.rows.get(table, 0) + n
            self.files += report.files
            self.vacuumed_pages += report.vacuumed_pages
            self.last_run_at = report.started_at
            self.last_seconds = report.seconds

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def pruned(self) -> dict[str, int]:
        with self._lock:
            return dict(self.rows)


class Pruner:
    """Runs the prune over one store; :meth:`run_once` is safe to call from any thread
    (runs do not overlap: a second caller waits for the first)."""

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stats: RetentionStats | None = None,
        batch_seconds: float = 0.05,
        pause_seconds: float = 0.005,
        first_batch: int = 200,
        max_batch: int = 5000,
        on_batch: Callable[[str, int], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        max_clock_lead: timedelta = MAX_CLOCK_LEAD,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.stats = stats if stats is not None else RetentionStats()
        self.batch_seconds = batch_seconds
        self.pause_seconds = pause_seconds
        self.first_batch = first_batch
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._sizes: dict[str, int] = {}
        self._run_lock = threading.Lock()
        self._stop = threading.Event()
        self.monotonic = monotonic
        self.max_clock_lead = max_clock_lead
        #: (prune time, monotonic seconds) of the last run: the track the wall clock is checked on
        self._track: tuple[datetime, float] | None = None

    # -- control --------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop a running prune after its current batch; True when none is running now."""
        self._stop.set()
        got = self._run_lock.acquire(timeout=timeout)
        if got:
            self._run_lock.release()
        return got

    def run_once(self) -> PruneReport:
        """Prune every table once, then vacuum and checkpoint; returns what was removed.

        Raises :class:`StorageError` when the store refuses a write (the rows of
        the batches committed before stay deleted; the next run continues).
        """
        with self._run_lock:
            started, t0 = self.clock(), time.perf_counter()
            now = self.as_of(started)
            rows: dict[str, int] = {}
            files = 0
            p = self.policy
            if p.deliveries is not None:
                rows["deliveries"] = self._deliveries(iso(now - p.deliveries))
            if p.alerts is not None:
                cut = iso(now - p.alerts)
                rows["alerts"] = self._alerts(cut)
                rows["silences"] = self._silences(cut)
                rows["rule_detectors"] = self._detectors(cut)
            if p.windows is not None:
                n_windows, n_metrics, n_samples = self._windows(iso(now - p.windows))
                rows["windows"] = n_windows
                rows["metrics"] = n_metrics
                rows["window_samples"] = n_samples
            if p.metrics is not None and p.metrics != p.windows:
                rows["metrics"] = rows.get("metrics", 0) + self._metrics(iso(now - p.metrics))
            rows["window_samples"] = rows.get("window_samples", 0) + self._samples()
            rows["references"], files = self._references(now)
            if p.dead_letters is not None:
                cut = iso(now - p.dead_letters)
                rows["dead_letters"] = self._dead_letters(cut)
                rows["dead_letter_volume"] = self._volume(cut)
            vacuumed, checkpointed = self._compact()
            report = PruneReport(
                started_at=started,
                rows={k: v for k, v in rows.items() if v},
                files=files,
                vacuumed_pages=vacuumed,
                checkpointed=checkpointed,
                seconds=time.perf_counter() - t0,
                stopped=self._stop.is_set(),
            )
            self.stats.record(report)
            if report.total:
                size = self.store.size_on_disk()
                log.info(
                    "retention: pruned %s%s; %d pages vacuumed; db %.1f MiB, wal %.1f MiB (%.1fs)",
                    ", ".join(f"{n} {t}" for t, n in sorted(report.rows.items())) or "no rows",
                    f", {files} reference files" if files else "",
                    vacuumed, size["db"] / 2**20, size["wal"] / 2**20, report.seconds,
                )
            return report

    def as_of(self, wall: datetime) -> datetime:
        """The time this run deletes as of: ``wall``, unless the wall clock is further ahead
        than the prune can vouch for; then that bound, with a WARNING naming the jump.

        What vouches for a time: the newest window end stored (event time, the producers'
        clocks) plus ``max_clock_lead``; at the first run of this pruner also the newest row
        stamped by our clock (:data:`_STAMPED`) plus ``max_clock_lead``; at later runs the
        previous run's time plus the monotonic seconds elapsed since (plus
        :data:`CLOCK_SLACK`; beyond that, exactly this track is used). An empty store
        vouches for any time. A wall clock behind the bound (stepped back) is used as it
        is: that only deletes less.
        """
        mono = self.monotonic()
        events = self._newest_event_end()
        vouched = None if events is None else events + self.max_clock_lead
        if self._track is None:
            stamped = self._newest_stored()
            if stamped is not None:
                vouched = max(vouched or stamped, stamped + self.max_clock_lead)
            bound = wall if vouched is None or wall <= vouched else vouched
            since = f"the newest row stored (plus {self.max_clock_lead})"
        else:
            at, then = self._track
            expected = at + timedelta(seconds=max(0.0, mono - then))
            trusted = max(expected + CLOCK_SLACK, vouched or expected)
            bound = max(expected, wall) if wall <= trusted else expected
            since = "the last prune (plus the monotonic time since)"
        if wall > bound:
            log.warning(
                "retention: the wall clock (%s) is %s ahead of what %s vouches for; pruning as of"
                " %s instead, so that a clock step deletes nothing early",
                iso(wall), wall - bound, since, iso(bound),
                extra={"event": "prune_clock_jump", "jump_seconds": (wall - bound).total_seconds()},
            )
        self._track = (bound, mono)
        now = min(wall, bound)
        return now

    def _newest_event_end(self) -> datetime | None:
        """The newest window end stored (event time: the producers' clocks, not ours), or None."""
        with self.store.transaction():
            row = self.store.execute('SELECT MAX("end") FROM windows', ()).fetchone()
        try:
            return parse_iso(str(row[0])) if row is not None and row[0] else None
        except ValueError:
            return None

    def _newest_stored(self) -> datetime | None:
        """The newest time stamped on a row of :data:`_STAMPED` (each an indexed MAX), or None."""
        newest: datetime | None = None
        with self.store.transaction():
            for table, column in _STAMPED:
                row = self.store.execute(f'SELECT MAX({column}) FROM "{table}"', ()).fetchone()
                if row is not None and row[0]:
                    at = parse_iso(str(row[0]))
                    newest = at if newest is None or at > newest else newest
        return newest

    # -- batches ------------------------------------------------------------------------

    def _drain(
        self,
        name: str,
        pick: Callable[[int], Sequence[Sequence[Any]]],
        delete: Callable[[Sequence[Sequence[Any]]], int],
    ) -> int:
        """Repeat {pick up to n keys; delete them} in short transactions until none is left.

        ``pick(n)`` runs inside the batch's transaction, so what is "live" is
        decided in the same snapshot as the delete.
        """
        total = 0
        size = self._sizes.get(name, self.first_batch)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            with self.store.transaction():
                keys = pick(size)
                n = delete(keys) if keys else 0
            took = time.perf_counter() - t0
            total += n
            if self.on_batch is not None and keys:
                self.on_batch(name, n)
            if len(keys) < size:
                break
            if took > self.batch_seconds and size > 1:
                size = max(1, size // 2)
            elif took < self.batch_seconds / 4:
                size = min(self.max_batch, size * 2)
            # let a writer waiting for the store lock in before the next batch
            time.sleep(self.pause_seconds)
        self._sizes[name] = size
        return total

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.store.execute(sql, params).fetchall()]

    def _delete_rowids(self, table: str, keys: Sequence[Sequence[Any]]) -> int:
        marks = ",".join("?" for _ in keys)
        cur = self.store.execute(f'DELETE FROM "{table}" WHERE rowid IN ({marks})', [k[0] for k in keys])
        return cur.rowcount

    # -- tables -------------------------------------------------------------------------

    def _deliveries(self, cut: str) -> int:
        sql = (
            "SELECT d.rowid FROM deliveries d WHERE d.status IN ('sent', 'dead') AND d.created_at < ?"
            f" AND NOT EXISTS (SELECT 1 FROM {self.store.dialect.json_values('d.alert_ids')}"
            " JOIN alerts a ON a.id = j.value"
            "   WHERE a.state IN ('pending', 'firing'))"
            " AND d.id NOT IN (SELECT parent_id FROM deliveries WHERE status = 'pending'"
            "   AND parent_id IS NOT NULL)"
            " AND NOT (d.kind = 'retrain' AND d.created_at >= (SELECT MAX(x.created_at)"
            "   FROM deliveries x WHERE x.notifier = d.notifier AND x.kind = 'retrain'"
            "   AND x.model = d.model))"
            " ORDER BY d.created_at LIMIT ?"
        )
        return self._drain(
            "deliveries",
            lambda n: self._rows(sql, (cut, n)),
            lambda keys: self._delete_rowids("deliveries", keys),
        )

    def _alerts(self, cut: str) -> int:
        sql = (
            "SELECT rowid FROM alerts WHERE state IN ('resolved', 'inactive')"
            " AND COALESCE(updated_at, resolved_at, started_at, '') < ?"
            " ORDER BY updated_at LIMIT ?"
        )
        return self._drain(
            "alerts", lambda n: self._rows(sql, (cut, n)), lambda keys: self._delete_rowids("alerts", keys)
        )

    def _detectors(self, cut: str) -> int:
        """Change-detector states not updated since ``cut``: a running detector is updated
        at every window of its rule, so these are of rules, models or segments gone."""
        sql = "SELECT rowid FROM rule_detectors WHERE updated_at < ? ORDER BY updated_at LIMIT ?"
        return self._drain(
            "rule_detectors", lambda n: self._rows(sql, (cut, n)),
            lambda keys: self._delete_rowids("rule_detectors", keys),
        )

    def _silences(self, cut: str) -> int:
        sql = "SELECT rowid FROM silences WHERE ends_at < ? ORDER BY ends_at LIMIT ?"
        return self._drain(
            "silences", lambda n: self._rows(sql, (cut, n)), lambda keys: self._delete_rowids("silences", keys)
        )

    def _windows(self, cut: str) -> tuple[int, int, int]:
        """Windows stored before ``cut`` with all their figures and samples; returns
        (windows, metrics, samples)."""
        sql = (
            f"SELECT rowid, id FROM windows WHERE computed_at < ? AND id NOT IN ({_LIVE_ALERT_WINDOWS})"
            " ORDER BY computed_at LIMIT ?"
        )
        metrics = samples = 0

        def delete(keys: Sequence[Sequence[Any]]) -> int:
            nonlocal metrics, samples
            marks = ",".join("?" for _ in keys)
            ids = [k[1] for k in keys]
            metrics += self.store.execute(f"DELETE FROM metrics WHERE window_id IN ({marks})", ids).rowcount
            samples += self.store.execute(f"DELETE FROM window_samples WHERE window_id IN ({marks})", ids).rowcount
            return self._delete_rowids("windows", keys)

        windows = self._drain("windows", lambda n: self._rows(sql, (cut, n)), delete)
        return windows, metrics, samples

    def _metrics(self, cut: str) -> int:
        """Figures of windows stored before ``cut`` (the windows stay: ``metrics`` < ``windows``).

        Walks the old windows once per run (keyset on ``computed_at, rowid``), so
        windows already without figures are not looked at again in this run.
        """
        after: tuple[str, int] = ("", -1)
        sql = (
            "SELECT w.rowid, w.id, w.computed_at FROM windows w WHERE w.computed_at < ?"
            " AND (w.computed_at, w.rowid) > (?, ?)"
            f" AND w.id NOT IN ({_LIVE_ALERT_WINDOWS})"
            " AND EXISTS (SELECT 1 FROM metrics m WHERE m.window_id = w.id)"
            " ORDER BY w.computed_at, w.rowid LIMIT ?"
        )

        def pick(n: int) -> list[tuple[Any, ...]]:
            nonlocal after
            keys = self._rows(sql, (cut, after[0], after[1], n))
            if keys:
                after = (keys[-1][2], keys[-1][0])
            return keys

        def delete(keys: Sequence[Sequence[Any]]) -> int:
            marks = ",".join("?" for _ in keys)
            return self.store.execute(
                f"DELETE FROM metrics WHERE window_id IN ({marks})", [k[1] for k in keys]
            ).rowcount

        return self._drain("metrics", pick, delete)

    def _samples(self) -> int:
        """Samples whose window is gone, then each model's beyond ``window_samples``."""
        orphans = (
            "SELECT s.rowid FROM window_samples s WHERE NOT EXISTS"
            " (SELECT 1 FROM windows w WHERE w.id = s.window_id) LIMIT ?"
        )
        n = self._drain(
            "window_samples", lambda k: self._rows(orphans, (k,)),
            lambda keys: self._delete_rowids("window_samples", keys),
        )
        keep = self.policy.window_samples
        if keep is None:
            return n
        with self.store.transaction():
            models = [r[0] for r in self._rows("SELECT DISTINCT model FROM window_samples", ())]
        for model in models:
            if self._stop.is_set():
                break
            with self.store.transaction():
                n += trim_window_samples(self.store, model, keep)
        return n

    def _references(self, now: datetime) -> tuple[int, int]:
        """Reference rows no longer in force and judged against by no stored window,
        then their uploaded files (and orphaned uploads); returns (rows, files)."""
        sql = (
            'SELECT r.rowid, r.path FROM "references" r'
            ' WHERE r.rowid != (SELECT x.rowid FROM "references" x WHERE x.model = r.model'
            "   ORDER BY x.registered_at DESC, x.rowid DESC LIMIT 1)"
            " AND NOT EXISTS (SELECT 1 FROM windows w WHERE w.reference = substr(r.sha256, 1, 12))"
            " LIMIT ?"
        )
        with self.store.transaction():
            keys = self._rows(sql, (10_000,))
            rows = self._delete_rowids("references", keys) if keys else 0
            # the bytes a shared store keeps of references no longer registered
            self.store.execute(
                'DELETE FROM reference_files WHERE sha256 NOT IN (SELECT sha256 FROM "references")'
            )
        files = 0
        base = self.policy.references_dir
        if base is None or not base.is_dir():
            return rows, files
        with self.store.transaction():
            in_use = {str(r[0]) for r in self._rows('SELECT path FROM "references"', ())}
        grace = ORPHAN_FILE_GRACE.total_seconds()
        for path in sorted(base.glob("*/*")):
            if self._stop.is_set():
                break
            if str(path) in in_use or not path.is_file():
                continue
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if age < grace:
                continue
            m = _REFERENCE_FILE.search(path.name)
            if m is not None:
                used = self.store.execute(
                    "SELECT 1 FROM windows WHERE reference = ? LIMIT 1", (m.group(1),)
                ).fetchone()
                if used:
                    continue
            elif not path.name.endswith(".tmp"):
                continue  # not ours: leave it alone
            try:
                path.unlink()
                files += 1
            except OSError as exc:
                log.warning("retention: cannot remove %s: %s", path, exc)
        return rows, files

    def _dead_letters(self, cut: str) -> int:
        # rowid, not id: the same on SQLite, but two sequences on PostgreSQL. The newest
        # letter (highest id) stays: SQLite numbers a new row after the highest id left, so
        # deleting it would hand its id out again, and the dead-letter topic's cursor, past
        # it already, would skip the next letters
        sql = (
            "SELECT rowid FROM dead_letters WHERE received_at < ?"
            " AND id < (SELECT MAX(id) FROM dead_letters) ORDER BY received_at LIMIT ?"
        )
        return self._drain(
            "dead_letters",
            lambda n: self._rows(sql, (cut, n)),
            lambda keys: self._delete_rowids("dead_letters", keys),
        )

    def _volume(self, cut: str) -> int:
        sql = "SELECT rowid FROM dead_letter_volume WHERE minute < ? ORDER BY minute LIMIT ?"
        return self._drain(
            "dead_letter_volume",
            lambda n: self._rows(sql, (cut, n)),
            lambda keys: self._delete_rowids("dead_letter_volume", keys),
        )

    # -- the file ---------------------------------------------------------------------

    def _compact(self) -> tuple[int, bool]:
        """Give free pages back in steps of :data:`VACUUM_PAGES_PER_STEP`, then checkpoint."""
        freed = 0
        if self.store.auto_vacuum_mode() == "incremental":
            while not self._stop.is_set() and self.store.freelist_count() > 0:
                n = self.store.incremental_vacuum(VACUUM_PAGES_PER_STEP)
                freed += n
                if n == 0:
                    break
                time.sleep(self.pause_seconds)
        try:
            done = self.store.checkpoint()
        except StorageError as exc:
            log.warning("retention: %s", exc)
            done = False
        return freed, done


def trim_window_samples(store: Store, model: str, keep: int) -> int:
    """Delete ``model``'s window samples beyond the newest ``keep`` (by window end, then id).

    Cheap enough for every flush: it walks the ``(model, "end")`` index over at most
    ``keep`` + the new rows. Returns how many were deleted.
    """
    cur = store.execute(
        "DELETE FROM window_samples WHERE model = ? AND window_id NOT IN (SELECT window_id FROM"
        ' window_samples WHERE model = ? ORDER BY "end" DESC, window_id DESC LIMIT ?)',
        (model, model, max(int(keep), 0)),
    )
    return cur.rowcount
