"""The alert engine: rules -> persisted lifecycle -> grouped deliveries in the outbox.

:meth:`AlertEngine.on_window` runs inside the pipeline's transaction, right
after the window's figures were written: the alert transitions and the
deliveries they cause commit together with the figures, or not at all. It does
no HTTP; :class:`alerts.outbox.DeliveryWorker` sends what it queued.

When to notify (one decision per alert event):

- entering ``firing``: a ``firing`` notification, unless *muted* (silenced, or
  a warning inhibited by its firing critical twin); a muted firing alert is
  notified on the first tick after it is no longer muted;
- ``resolved``: a ``resolved`` notification if the firing was notified and
  the alert is not silenced;
- while firing: a ``reminder`` every ``repeat_interval`` after the last
  notification (on ticks), unless muted;
- pending, and going back from pending to inactive: nothing.

Alerts of one call whose group labels (``AlertSettings.group_by``) are equal
go out as one message per notifier; resolutions and reminders are grouped per
firing message they refer to (Slack threads them there). Retraining notifiers
get one ``retrain.requested`` per model on firing, at most one per cooldown
(derived from the outbox, so it survives restarts).

Several instances on one shared store keep one alert state: every decision
reads the ``alerts`` rows inside its transaction, under a lock per model
(:func:`storage.alerts.alert_lock_key`; ticks also take a tick lock), so an
alert that fired on one instance resolves on whichever instance judges the
model's next window, and two instances' ticks never queue the same reminder.
No-data rules count a model as active when any instance stored a window of it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.notifiers.base import NotifierSpec
from alerts.payloads import (
    WindowContext,
    alert_dict,
    drifted_list,
    notification_payload,
    retrain_payload,
)
from alerts.rules import Evaluation, Rule, detector_step
from alerts.state import FIRING, INACTIVE, PENDING, RESOLVED, mute_reason, step, twin_key
from storage import alerts as db
from storage.alerts import AlertRecord, DeliveryRecord, SilenceRecord
from storage.db import Store
from storage.detectors import load_detector, save_detector
from storage.instances import names_elsewhere, rule_digests_elsewhere
from storage.records import MetricRow, WindowRecord, id_field, iso, parse_iso

Clock = Callable[[], datetime]

#: the store lock two instances' ticks take in turn (see the module doc)
TICK_LOCK = "alerts:tick"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _reminder_due(now: datetime, last_notified: datetime, every: timedelta) -> bool:
    """Whether a firing alert last notified at ``last_notified`` is due a reminder at ``now``.

    Due ``every`` after the last notification; also when that notification lies more than
    ``every`` in the future: it was stamped by a wall clock since stepped back (forward a
    year, then back), and waiting for it would hold every reminder back by the step. A
    step back of less than ``every`` delays the next reminder by at most the step.
    """
    return now - last_notified >= every or last_notified - now > every


@dataclass(frozen=True)
class AlertSettings:
    """Engine-wide defaults.

    ``group_by``: alert labels whose equal values put alerts in one message
    (``alertname`` is the rule's name). ``default_notifiers``: for rules naming
    none (empty: every ``alert``-kind notifier). ``max_drifted_columns``: how
    many top drifted columns a message lists. ``reminders``: False for a replay of
    history: a reminder falls due and counts as made (``last_notified_at`` moves, as
    live, so the ``alerts`` table is a live run's) but nothing is queued; the engine
    counts them in :attr:`AlertEngine.reminders_not_sent`. ``models``: the configured
    models (None: any): an alert of a model removed from the config ends quietly (no
    window judges it again; it sent reminders for good), and no-data rules without a
    ``model`` watch only these (a removed model is silent for good).
    """

    repeat_interval: timedelta = timedelta(hours=4)
    group_by: tuple[str, ...] = ("model", "alertname")
    default_notifiers: tuple[str, ...] = ()
    max_drifted_columns: int = 10
    reminders: bool = True
    models: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.repeat_interval <= timedelta(0):
            raise ValueError("repeat_interval must be positive")
        if self.max_drifted_columns < 0:
            raise ValueError("max_drifted_columns must be >= 0")


@dataclass(frozen=True)
class Transition:
    """One alert event: a state change, or a notification decided on a tick.

    ``event`` is the new state (``pending``, ``firing``, ``resolved``,
    ``inactive``) or ``reminder`` / ``notify`` (late firing notification after a
    silence or inhibition ended). ``notifiers``: where a notification was
    queued; ``muted``: ``"silenced"``, ``"inhibited"`` or ``""``.
    """

    alert_id: str
    rule: str
    model: str
    labels: Mapping[str, str]
    from_state: str
    to_state: str
    event: str
    value: float | None
    threshold: float | None
    at: datetime
    window_id: str | None = None
    notifiers: tuple[str, ...] = ()
    muted: str = ""


@dataclass
class _Pending:
    """An alert event waiting for the notify decision."""

    alert: AlertRecord
    rule: Rule
    kind: str  # firing | resolved | reminder
    transition_index: int | None
    notifiers: list[str] = field(default_factory=list)


class AlertEngine:
    """Evaluates rules on each window and on scheduler ticks; see the module doc."""

    def __init__(
        self,
        store: Store,
        rules: Sequence[Rule],
        *,
        notifiers: Mapping[str, Any] | None = None,
        clock: Clock = utc_now,
        settings: AlertSettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        #: this instance's digest of each rule's settings, as it announces them on a shared
        #: store (:mod:`storage.instances`; set by the daemon): tells a rule another instance
        #: still has in its old scope (a rolling change) from one all have re-scoped alike
        self.rule_digests: dict[str, str] = {}
        #: this instance in :mod:`storage.instances` (a shared store: whose rules are whose)
        self.owner = owner
        self.clock = clock
        self.settings = settings or AlertSettings()
        self.rules: tuple[Rule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        self._rules_by_name = {r.name: r for r in self.rules}
        self.notifiers: dict[str, NotifierSpec] = {
            name: _spec(name, n) for name, n in (notifiers or {}).items()
        }
        for name in self.settings.default_notifiers:
            if name not in self.notifiers:
                raise ValueError(f"default notifier {name!r} is not configured")
        for r in self.rules:
            for name in r.notifiers:
                if name not in self.notifiers:
                    raise ValueError(f"rule {r.name!r}: notifier {name!r} is not configured")
        self._lock = threading.Lock()
        #: with ``settings.reminders`` off: reminders due to a notifier that were not queued
        #: (one per alert and time; a transaction rolled back after counting still counts)
        self.reminders_not_sent = 0
        started = self.clock()
        #: last time each model sent rows (wall clock); seeded with the start
        #: time so a restart does not count downtime as silence.
        self._activity: dict[str, datetime] = {}
        self._started = started
        #: per instance of a rule without ``version``: what it saw of its last time slot
        #: (see :meth:`_judge_slot`); lost on a restart, kept by a config reload
        self._slots: dict[str, _Slot] = {}
        #: the entries of ``_slots`` the flush in progress changed, as they were before it
        #: (None: no entry); put back when it rolls back (:meth:`flush_outcome`)
        self._undo: dict[str, _Slot | None] = {}
        #: per thread, the open :meth:`memory_savepoint` journals, innermost last: the entries
        #: of ``_slots`` each changed, as they were before it (None: no entry)
        self._frames = threading.local()
        if any(r.is_no_data for r in self.rules):
            self._seed_activity(started)

    # -- inputs ---------------------------------------------------------------------

    def observe_model_activity(self, model: str, ts: datetime | None = None) -> None:
        """Record that ``model`` sent rows at ``ts`` (default: now), for no-data rules."""
        ts = ts or self.clock()
        with self._lock:
            last = self._activity.get(model)
            if last is None or ts > last:
                self._activity[model] = ts

    def start_clocks(self, at: datetime) -> None:
        """Count no-data silences from ``at`` instead of from this engine's construction: a
        replay, whose clock is event time, starts them at the file's first events."""
        with self._lock:
            self._started = at
        if any(r.is_no_data for r in self.rules):
            self._seed_activity(at)

    def tick_due(self, after: datetime | None = None) -> datetime | None:
        """The earliest time at which :meth:`on_tick` would change something, or None: a
        no-data rule's silence reaching ``no_data_for``, a firing no-data alert whose model
        was active since (it resolves), a reminder. For a replay, which ticks at these event
        times instead of every ``tick_interval``. Notifications held back by an inhibition
        are not counted (they go out at the next tick made for another reason).

        ``after``: only times later than it (a tick at ``after`` handled all that was due by
        then; a reminder held back by an inhibition stays due at its time, and must not hide
        the times due after it)."""
        due: list[datetime] = []
        with self._lock:
            activity = dict(self._activity)
        for rule in self.rules:
            if not rule.is_no_data:
                continue
            assert rule.no_data_for is not None
            for model in [rule.model] if rule.model else sorted(activity):
                last = activity.get(model, self._started)
                stored = db.latest_window_at(self.store, model)
                if stored is not None and stored > last:
                    last = stored
                alert = db.get_alert(self.store, rule.instance_id(model, "", "", ""))
                if alert is not None and alert.state == FIRING:
                    if alert.window_start and last > parse_iso(alert.window_start):
                        due.append(last)
                else:
                    due.append(last + rule.no_data_for)
        for alert in db.active_alerts(self.store, (FIRING,)):
            rule = self._rules_by_name.get(alert.rule)
            if rule is not None and alert.last_notified_at is not None:
                due.append(alert.last_notified_at + (rule.repeat_interval or self.settings.repeat_interval))
        return min((t for t in due if after is None or t > after), default=None)

    def continue_activity(self, previous: AlertEngine, models: Collection[str] | None = None) -> None:
        """Go on with ``previous``'s no-data clocks (a config reload builds a new engine):
        its last activity per model replaces this engine's start-up seed of "active now",
        which would restart every clock at each reload. Also what its rules without
        ``version`` saw of their last time slot (:meth:`_judge_slot`), for the rules this
        engine has unchanged and the ``models`` still configured (None: any): the memory of
        a rule removed or changed (its verdicts were another rule's), or of a model
        removed, is dropped, so it does not grow with each reload."""
        with previous._lock:
            activity = dict(previous._activity)
            slots = {aid: s for aid, s in previous._slots.items() if self._keeps(s, models)}
            # a flush whose outcome is not known yet
            undo = {aid: s for aid, s in previous._undo.items() if s is None or self._keeps(s, models)}
        if self.settings.models is not None:  # a model removed by the reload is not watched
            activity = {m: t for m, t in activity.items() if m in self.settings.models}
        with self._lock:
            self._activity.update(activity)
            self._slots.update(slots)
            self._undo.update(undo)

    def _keeps(self, slot: _Slot, models: Collection[str] | None) -> bool:
        """Whether a slot memory of another engine (a reload's previous one) is still this
        engine's: its rule is here, unchanged, and its model is in ``models`` (None: any)."""
        ev = next(iter(slot.seen.values())).ev
        return self._rules_by_name.get(ev.rule.name) == ev.rule and (models is None or ev.model in models)

    def flush_outcome(self, committed: bool) -> None:
        """The flush transaction that judged windows since the last call committed, or rolled
        back (``Pipeline.on_outcome``). Rolled back, what the rules without ``version`` saw
        of their slots since then is forgotten with the windows: the memory is put back as it
        was before the flush, so a clear it held is never judged by a later flush (from
        windows never stored, under a model lock that flush did not take first), and the
        flush written again judges its slots from the same memory as the first time."""
        with self._lock:
            if not committed:
                self._put_back(self._undo)
            self._undo.clear()

    @contextmanager
    def memory_savepoint(self) -> Iterator[None]:
        """What the rules without ``version`` see of their slots inside is forgotten when it
        raises: the memory is put back as it was at its start, as the store's savepoint around
        it rolls back the window's writes. Without it a clear held by a window whose judgement
        failed (stored with status ``error``) was still counted by :meth:`finish_slots`.

        Use it together with the store savepoint whose rollback it mirrors (around it also
        covers a savepoint whose release fails; :meth:`on_window` and :meth:`finish_slots`
        open one of each, :class:`monitor.service.alerting.Alerting` one more for the rest of
        the pipeline's savepoint of a window). Nested,
        an inner one that ends normally hands its entries on to the one around it; the flush's
        journal (:meth:`flush_outcome`) is kept either way."""
        stack = self._journals()
        frame: dict[str, _Slot | None] = {}
        stack.append(frame)
        try:
            yield
        except BaseException:
            stack.pop()
            with self._lock:
                self._put_back(frame)
            raise
        stack.pop()
        if stack:
            for aid, before in frame.items():
                stack[-1].setdefault(aid, before)

    def _put_back(self, journal: Mapping[str, _Slot | None]) -> None:
        """Restore the slot memory entries ``journal`` noted as they were (None: no entry).
        Call with ``_lock`` held."""
        for aid, before in journal.items():
            if before is None:
                self._slots.pop(aid, None)
            else:
                self._slots[aid] = before

    def _journals(self) -> list[dict[str, _Slot | None]]:
        """This thread's open :meth:`memory_savepoint` journals, innermost last."""
        stack: list[dict[str, _Slot | None]] | None = getattr(self._frames, "stack", None)
        if stack is None:
            stack = self._frames.stack = []
        return stack

    def on_window(
        self,
        window: WindowRecord,
        metrics: Sequence[MetricRow],
        *,
        context: WindowContext | None = None,
        reevaluate: bool = False,
    ) -> list[Transition]:
        """Evaluate every rule on one closed window; returns the transitions.

        Call inside ``store.transaction()`` after writing the window's figures
        (it opens a nested transaction if you do not). Re-running the same
        window (a replay after a crash) changes nothing: each alert instance
        judges a window once, and never a time window ending before the last
        one it judged. An instance of a rule with ``version=None`` covers every
        version and judges time slots: the versions' windows ending at the same
        time count once, and the slot breaches when any of them breaches
        (:meth:`_judge_slot`). An instance gets an ``alerts`` row on its first
        breach.

        ``reevaluate``: the figures of a window were recomputed (performance
        windows, when late labels arrive). An instance whose last judged window
        is this one judges it again: the same verdict only updates the value;
        a changed verdict counts as one more evaluation (a window that turned
        clear is a clear window, one that turned breaching a breaching one).
        Older windows are still never judged after newer ones.
        """
        ctx = context or WindowContext()
        now = self.clock()
        key = window.key
        with self._lock:
            self._activity.setdefault(key.model, now)
        winfo = {
            "id": window.id,
            "start": ctx.start or key.start,
            "end": ctx.end or key.end,
            "rows": window.rows if ctx.rows is None else ctx.rows,
            "status": window.status,
        }
        with self.memory_savepoint(), self.store.transaction():
            self.store.lock(db.alert_lock_key(key.model))
            existing = db.alerts_of_model(self.store, key.model)
            transitions: list[Transition] = []
            events: list[_Pending] = []
            for rule in self.rules:
                for ev in rule.evaluations(key, metrics, ctx.reference_metrics):
                    if rule.detector is not None:
                        detected = self._detect(rule, ev, window.id, key.end, now)
                        if detected is None:
                            continue
                        ev = detected
                    aid = ev.alert_id
                    old = existing.get(aid)
                    seen = _Seen(ev, window.id, winfo["start"], key.end, winfo, ctx)
                    if rule.version is None and _is_time(key.end):
                        steps = self._judge_slot(rule, old, seen, reevaluate, now)
                    else:
                        new = self._judge_window(rule, old, seen, reevaluate, now)
                        steps = [] if new is None else [new]
                    if not steps:
                        continue
                    before = old or _fresh(rule, aid, key.model, ev.column, ev.segment)
                    for new in steps:  # more than one: a held slot finished, then this one
                        _record_step(transitions, events, before, new, rule, now, window.id)
                        before = new
                    existing[aid] = before
                    db.upsert_alert(self.store, before)
            self._notify(events, transitions, now, winfo, ctx)
        return transitions

    def finish_slots(self) -> list[Transition]:
        """Judge clear every slot still held (see :meth:`_judge_slot`): a version of the
        previous slot has no window in it. Call at the end of a flush, in its transaction
        (it opens one if you do not): the windows of one slot of a model close together,
        in one flush, so a version missing then is not coming. Without this the clear
        would wait in memory for the model's next slot: lost on a restart or a rolled-back
        flush, and never counted when the model stops. Returns the transitions made."""
        with self._lock:
            held = {aid: s for aid, s in self._slots.items() if s.applied is None}
        if not held:
            return []
        now = self.clock()
        out: list[Transition] = []
        by_model: dict[str, list[tuple[str, _Slot]]] = {}
        for aid, mem in held.items():
            by_model.setdefault(next(iter(mem.seen.values())).ev.model, []).append((aid, mem))
        with self.memory_savepoint(), self.store.transaction():
            self.store.lock(*(db.alert_lock_key(m) for m in sorted(by_model)))
            for model in sorted(by_model):
                existing = db.alerts_of_model(self.store, model)
                for aid, mem in by_model[model]:
                    out.extend(self._finish_slot(aid, mem, existing.get(aid), now))
        return out

    def _finish_slot(self, aid: str, mem: _Slot, old: AlertRecord | None, now: datetime) -> list[Transition]:
        """Step the instance ``aid`` with its held clear slot ``mem``; its transitions."""
        if mem.written != _mark(old):
            self._remember(aid, None)  # the row changed meanwhile: the memory is stale
            return []
        if old is None:  # an instance that never breached: nothing to write, nothing to keep
            self._remember(aid, None)
            return []
        shown = mem.shown(old)
        rule = shown.ev.rule
        new = _stepped(rule, old, False, shown, now)
        transitions: list[Transition] = []
        events: list[_Pending] = []
        _record_step(transitions, events, old, new, rule, now, shown.window_id)
        db.upsert_alert(self.store, new)
        self._remember(aid, replace(mem, applied=False, written=_mark(new)))
        self._notify(events, transitions, now, shown.winfo, shown.ctx or WindowContext())
        return transitions

    def on_tick(self, now: datetime | None = None) -> list[Transition]:
        """No-data rules, late notifications and reminders; opens its own transaction."""
        now = now or self.clock()
        transitions: list[Transition] = []
        events: list[_Pending] = []
        with self.store.transaction():
            if self.store.shared:
                models = {a.model for a in db.active_alerts(self.store, (PENDING, FIRING))}
                with self._lock:
                    models |= set(self._activity)
                models |= {r.model for r in self.rules if r.is_no_data and r.model}
                self.store.lock(TICK_LOCK, *(db.alert_lock_key(m) for m in models))
            self._no_data(now, transitions, events)
            elsewhere: set[str] | None = None  # the rules other live instances have, read once
            models_elsewhere: set[str] | None = None  # and their models
            rescoped: dict[str, set[str]] | None = None  # and their settings' digests, read once
            for alert in db.active_alerts(self.store, (PENDING, FIRING)):
                rule = self._rules_by_name.get(alert.rule)
                if rule is not None and not rule.covers(alert.id, alert.model, alert.column, alert.segment,
                                                        alert.version, alert.metric):
                    # re-scoped in place: the rule of that name judges other instances now,
                    # unless another live instance still has it with other settings
                    if self.store.shared:
                        if rescoped is None:
                            rescoped = rule_digests_elsewhere(self.store, now, other_than=self.owner)
                        mine = self.rule_digests.get(alert.rule)
                        if any(d != mine for d in rescoped.get(alert.rule, ())):
                            continue
                    rule = None
                elif rule is None and self.store.shared:
                    # a rule another live instance of the shared store has (a rolling change of
                    # the config): its alerts are that instance's, not a rule that left
                    if elsewhere is None:
                        elsewhere = names_elsewhere(self.store, now, "rules", other_than=self.owner)
                    if alert.rule in elsewhere:
                        continue
                if rule is not None and self.settings.models is not None and alert.model not in self.settings.models:
                    # the model left the config: no window judges its alerts again, unless
                    # another live instance of a shared store still has it (a rolling change)
                    if self.store.shared:
                        if models_elsewhere is None:
                            models_elsewhere = names_elsewhere(self.store, now, "models", other_than=self.owner)
                        if alert.model in models_elsewhere:
                            continue
                    rule = None
                if rule is None:  # the rule left the config (or no longer covers it): end the alert quietly
                    gone = alert.evolve(
                        state=RESOLVED if alert.state == FIRING else INACTIVE,
                        resolved_at=now if alert.state == FIRING else alert.resolved_at,
                        updated_at=now,
                    )
                    db.upsert_alert(self.store, gone)
                    transitions.append(_transition(alert, gone, gone.state, now, None))
                    continue
                if alert.state != FIRING or any(e.alert.id == alert.id for e in events):
                    continue
                if alert.last_notified_at is None:
                    transitions.append(_transition(alert, alert, "notify", now, None))
                    events.append(_Pending(alert, rule, FIRING, len(transitions) - 1))
                else:
                    every = rule.repeat_interval or self.settings.repeat_interval
                    if _reminder_due(now, alert.last_notified_at, every):
                        transitions.append(_transition(alert, alert, "reminder", now, None))
                        events.append(_Pending(alert, rule, "reminder", len(transitions) - 1))
            self._notify(events, transitions, now, None, WindowContext())
        return [t for t in transitions if t.event not in ("notify", "reminder") or t.notifiers]

    # -- silences ---------------------------------------------------------------------

    def silence(
        self,
        model: str | None = None,
        rule: str | None = None,
        until: datetime | None = None,
        created_by: str = "",
        comment: str = "",
        *,
        starts_at: datetime | None = None,
    ) -> str:
        """Mute notifications of ``model`` / ``rule`` (None: any) until ``until``.

        State keeps changing underneath; an alert still firing when the silence
        ends is notified on the next tick. Returns the silence id."""
        now = self.clock()
        if until is None:
            raise ValueError("a silence needs an end time (until)")
        start = starts_at or now
        if until.tzinfo is None or start.tzinfo is None:
            raise ValueError("silence times must be timezone-aware")
        if until <= start:
            raise ValueError("a silence must end after it starts")
        if rule is not None and rule not in self._rules_by_name:
            raise ValueError(f"unknown rule {rule!r}")
        sid = "sil_" + uuid.uuid4().hex[:20]
        rec = SilenceRecord(
            id=sid,
            model=model,
            rule=rule,
            starts_at=start,
            ends_at=until,
            created_at=now,
            created_by=created_by,
            comment=comment,
        )
        with self.store.transaction():
            db.insert_silence(self.store, rec)
        return sid

    def list_silences(self, *, active_only: bool = True) -> list[SilenceRecord]:
        return db.list_silences(self.store, active_at=self.clock() if active_only else None)

    def expire_silence(self, silence_id: str) -> bool:
        with self.store.transaction():
            return db.expire_silence(self.store, silence_id, self.clock())

    # -- internals ------------------------------------------------------------------

    def _judge_window(
        self, rule: Rule, old: AlertRecord | None, seen: _Seen, reevaluate: bool, now: datetime
    ) -> AlertRecord | None:
        """The instance after judging one window on its own (rules with a ``version``, and
        count windows); None when nothing changes. Each window is judged once, never one
        ending at or before the last judged one; ``reevaluate`` re-judges the last one."""
        ev = seen.ev
        if old is None:
            if not ev.breached:
                return None  # no row for instances that never breached
            old = _fresh(rule, ev.alert_id, ev.model, ev.column, ev.segment)
        if old.last_window_id == seen.window_id:
            if not reevaluate:
                return None
            if _last_breached(old) == ev.breached:
                if old.value != ev.value or old.threshold != ev.threshold:
                    return old.evolve(value=ev.value, threshold=ev.threshold, updated_at=now)
                return None
        elif _older(seen.end, old.window_end):
            return None
        return _stepped(rule, old, ev.breached, seen, now)

    def _judge_slot(
        self, rule: Rule, old: AlertRecord | None, seen: _Seen, reevaluate: bool, now: datetime
    ) -> list[AlertRecord]:
        """The instance of a rule without ``version`` after one version's time window: the
        states it goes through (empty: nothing changes; two: a held slot was finished first).

        The instance judges time *slots* (windows ending at the same time), not windows: a
        slot breaches when any version's window in it breaches, and counts once toward
        ``for_windows`` and ``resolve_after``. A breach steps the state at once (no other
        version can make the slot clear). A clear window is *held* while versions that had
        a window in the instance's previous slot have not reported in this one: the slot is
        judged clear when the last of them is clear, or when a window of a newer slot
        arrives (a version that stopped delays a clear slot by one slot). A window that
        changes a judged slot's verdict (a version new to the model breaching after the
        slot was judged clear; ``reevaluate`` turning the breaching window clear) judges the
        slot again from the state before it, unless the slot's step fired or resolved the
        alert (its notification is queued): then it counts as one more evaluation.

        What the slot saw is kept in memory (:class:`_Slot`). Without it (a restart;
        another instance of a shared store judged the slot) a breaching window of a slot
        judged clear counts as one more breaching evaluation, and a clear one of a slot
        judged breaching changes nothing.
        """
        aid = seen.ev.alert_id
        with self._lock:
            mem = self._slots.get(aid)
        if mem is not None and mem.written != _mark(old):
            mem = None  # not the state this engine left: another instance, or a rollback
        if mem is not None and _same_time(seen.end, mem.end):
            return self._more_of_slot(rule, old, mem, seen, reevaluate, now)
        if old is not None and _same_time(seen.end, old.window_end):
            if mem is not None:
                return []  # an older slot than the one held
            if old.last_window_id == seen.window_id:
                new = self._judge_window(rule, old, seen, reevaluate, now)
                return [] if new is None else [new]
            if seen.ev.breached and not _last_breached(old):
                return [_stepped(rule, old, True, seen, now)]
            return []
        if (old is not None and _older(seen.end, old.window_end)) or (
            mem is not None and _older(seen.end, mem.end)
        ):
            return []
        steps: list[AlertRecord] = []
        if mem is not None and mem.applied is None and old is not None:
            steps.append(_stepped(rule, old, False, mem.shown(old), now))  # the held clear slot
        cur = steps[-1] if steps else old
        expected = frozenset(s.ev.version for s in mem.seen.values()) if mem else frozenset()
        slot = _Slot(seen.end, cur, {seen.window_id: seen}, _mark(cur), expected, None)
        return steps + self._settle(rule, cur, slot, None, now)

    def _more_of_slot(
        self, rule: Rule, old: AlertRecord | None, mem: _Slot, seen: _Seen, reevaluate: bool,
        now: datetime,
    ) -> list[AlertRecord]:
        """Another window (or, with ``reevaluate``, the figures again) of the slot ``mem``
        describes; see :meth:`_judge_slot`."""
        if seen.window_id in mem.seen and not reevaluate:
            return []  # a replayed window
        slot = replace(mem, seen={**mem.seen, seen.window_id: seen})
        return self._settle(rule, old, slot, mem.applied, now)

    def _settle(
        self, rule: Rule, old: AlertRecord | None, slot: _Slot, applied: bool | None, now: datetime
    ) -> list[AlertRecord]:
        """Apply what ``slot`` saw to ``old`` (``applied``: the verdict the slot already
        stepped, None: none yet); remembers the slot and returns the new states."""
        aid = next(iter(slot.seen.values())).ev.alert_id
        verdict = slot.breached
        shown = slot.shown(old)
        new: AlertRecord | None = None
        if applied is None and not verdict and not slot.complete:
            pass  # hold the clear until the slot's other versions report
        elif applied is None:
            if old is not None or verdict:
                new = _stepped(rule, old or _fresh_for(rule, shown), verdict, shown, now)
            applied = verdict
        elif applied != verdict:
            base = slot.base if _undoable(slot.base, old) else old
            new = _stepped(rule, base or _fresh_for(rule, shown), verdict, shown, now)
            applied = verdict
        elif old is not None and not _shows(old, shown) and (verdict or shown.window_id == old.last_window_id):
            new = _showing(rule, old, shown, now)
        row = new or old
        if row is None and applied is False:
            # a clear slot of an instance without a row: judged without memory, a window of
            # it gives the same (clear: nothing; a breach: the instance's first, as a late
            # window of an older slot does for a rule with `version`), so none is kept; kept,
            # every segment value a `segment = "*"` rule ever saw stayed in memory
            self._remember(aid, None)
        else:
            self._remember(aid, replace(slot, applied=applied, written=_mark(row)))
        return [] if new is None else [new]

    def _remember(self, aid: str, slot: _Slot | None) -> None:
        """Keep ``slot`` as what the instance ``aid`` saw of its last slot (None: forget it);
        the entry before is noted for :meth:`flush_outcome` and the innermost open
        :meth:`memory_savepoint`."""
        stack = self._journals()
        with self._lock:
            if aid not in self._undo:
                self._undo[aid] = self._slots.get(aid)
            if stack and aid not in stack[-1]:
                stack[-1][aid] = self._slots.get(aid)
            if slot is None:
                self._slots.pop(aid, None)
            else:
                self._slots[aid] = slot

    def _detect(
        self, rule: Rule, ev: Evaluation, window_id: str, window_end: str, now: datetime
    ) -> Evaluation | None:
        """Feed the figure to the instance's persisted detector; None when this window
        was already fed (a replay after a crash must not count a figure twice).

        An instance of a rule without ``version`` runs one detector per version (each
        version's figures are a series of their own; mixed, a level difference between
        two versions would look like a change), stored under :func:`_detector_key`; its
        slot breaches when any of them signals. The version that fed the instance's one
        detector last (what earlier releases ran for all versions) continues it; any other
        version starts a detector of its own (a canary first seen after an upgrade must not
        be judged against the baseline's learned level and running sums)."""
        assert rule.detector is not None
        key = _detector_key(rule, ev)
        saved = load_detector(self.store, key)
        if saved is None and key != ev.alert_id:
            shared = load_detector(self.store, ev.alert_id)
            if shared is not None and _window_version(shared["last_window_id"]) == id_field(ev.version):
                saved = shared
        if saved is not None and (
            saved["last_window_id"] == window_id or _older(window_end, saved["window_end"])
        ):
            return None
        state, statistic, signalled = detector_step(rule, saved["state"] if saved else None, ev.value)
        save_detector(
            self.store, alert_id=key, rule=rule.name, model=ev.model, state=state,
            last_window_id=window_id, window_end=window_end, now=now,
        )
        return replace(ev, value=statistic, threshold=rule.detector.limit, breached=signalled)

    def _seed_activity(self, started: datetime) -> None:
        """Known models start "active now" (downtime is not silence), except
        those whose no-data alert is firing: they stay silent since the last
        activity recorded on the alert, so a restart does not resolve it."""
        models = set(db.known_models(self.store))
        if self.settings.models is not None:  # a model removed from the config is not watched
            models &= self.settings.models
        models.update(r.model for r in self.rules if r.is_no_data and r.model)
        self._activity = dict.fromkeys(models, started)
        no_data = {r.name for r in self.rules if r.is_no_data}
        for alert in db.active_alerts(self.store, (FIRING,)):
            if alert.rule in no_data and alert.window_start:
                last = parse_iso(alert.window_start)
                self._activity[alert.model] = min(self._activity.get(alert.model, last), last)

    def _no_data(
        self, now: datetime, transitions: list[Transition], events: list[_Pending]
    ) -> None:
        rules = [r for r in self.rules if r.is_no_data]
        if not rules:
            return
        with self._lock:
            activity = dict(self._activity)
        for rule in rules:
            assert rule.no_data_for is not None
            models = [rule.model] if rule.model else sorted(activity)
            for model in models:
                last = self._last_activity(model, activity, now)
                silent = now - last >= rule.no_data_for
                aid = rule.instance_id(model, "", "", "")
                old = db.get_alert(self.store, aid) or _fresh(rule, aid, model, "", "")
                if not silent and old.state in (INACTIVE, RESOLVED):
                    continue
                new = step(old, breached=silent, for_windows=1, resolve_after=1, now=now).evolve(
                    value=(now - last).total_seconds(),
                    threshold=rule.no_data_for.total_seconds(),
                    updated_at=now,
                    severity=rule.severity,
                    labels=rule.instance_labels(model, "", "", ""),
                    window_start=iso(last),
                    window_end=iso(now),
                )
                db.upsert_alert(self.store, new)
                _record_step(transitions, events, old, new, rule, now, None)

    def _last_activity(self, model: str, activity: dict[str, datetime], now: datetime) -> datetime:
        """When ``model`` last sent rows, for its no-data silence at ``now``: the newer of this
        engine's record (its start when none) and the newest window stored (any instance's).

        A time after ``now`` was stamped by a wall clock since stepped back (forward a year,
        then back): it would hold the silence at zero until the clock got there again, so a
        stored one is ignored and this engine's is reset to ``now``; the silence then counts
        from the step back.
        """
        last = activity.get(model, self._started)
        if last > now:
            last = now
            with self._lock:
                if self._activity.get(model, now) > now:
                    self._activity[model] = now
        stored = db.latest_window_at(self.store, model)  # any instance's windows
        if stored is not None and last < stored <= now:
            last = stored
        return last

    def _targets(self, rule: Rule, kind: str) -> list[str]:
        names = list(rule.notifiers or self.settings.default_notifiers)
        if not names:
            names = [n for n, s in self.notifiers.items() if s.kind == "alert"]
        if kind != FIRING:  # retraining is asked for on firing only
            names = [n for n in names if self.notifiers[n].kind == "alert"]
        return names

    def _notify(
        self,
        events: list[_Pending],
        transitions: list[Transition],
        now: datetime,
        window: Mapping[str, Any] | None,
        ctx: WindowContext,
    ) -> None:
        if not events:
            return
        silences = db.list_silences(self.store, active_at=now)
        # the transitions of this call are already written: the store is current
        firing_critical = {
            twin_key(a)
            for a in db.active_alerts(self.store, (FIRING,))
            if a.severity == "critical"
        }
        to_send: list[_Pending] = []
        for ev in events:
            muted = mute_reason(ev.alert, silences, firing_critical)
            if ev.kind == RESOLVED:
                if ev.alert.last_notified_at is None:
                    muted = muted or "not notified"
                elif muted == "inhibited":
                    muted = ""  # a notified alert's resolution is always useful
            if muted:
                self._mark(transitions, ev, (), muted)
                continue
            if ev.kind == "reminder" and not self.settings.reminders:
                self._hold_reminder(ev, now)
                continue
            to_send.append(ev)
        drifted = drifted_list(ctx.drifted_columns, self.settings.max_drifted_columns)
        by_notifier: dict[str, list[_Pending]] = {}
        for ev in to_send:
            for name in self._targets(ev.rule, ev.kind):
                by_notifier.setdefault(name, []).append(ev)
        for name, evs in by_notifier.items():
            spec = self.notifiers[name]
            if spec.kind == "retrain":
                self._queue_retrain(name, spec, evs, now, window, drifted, ctx)
            else:
                self._queue_alerts(name, evs, now, window, drifted, ctx)
        for ev in to_send:
            if ev.kind in (FIRING, "reminder"):
                db.upsert_alert(self.store, ev.alert.evolve(last_notified_at=now))
            self._mark(transitions, ev, tuple(ev.notifiers), "")

    def _hold_reminder(self, ev: _Pending, now: datetime) -> None:
        """``settings.reminders`` off: the reminder counts as made (its alert's next one falls
        due a ``repeat_interval`` later, as live) but is not queued; counted when it would
        have gone to a notifier."""
        db.upsert_alert(self.store, ev.alert.evolve(last_notified_at=now))
        if self._targets(ev.rule, ev.kind):
            self.reminders_not_sent += 1

    @staticmethod
    def _mark(
        transitions: list[Transition], ev: _Pending, names: tuple[str, ...], muted: str
    ) -> None:
        if ev.transition_index is None:
            return
        t = transitions[ev.transition_index]
        transitions[ev.transition_index] = replace(t, notifiers=names, muted=muted)

    def _group_labels(self, alert: AlertRecord) -> dict[str, str]:
        labels = dict(alert.labels)
        labels.setdefault("alertname", alert.rule)
        labels.setdefault("model", alert.model)
        return {g: labels.get(g, "") for g in self.settings.group_by}

    def _queue_alerts(
        self,
        name: str,
        evs: list[_Pending],
        now: datetime,
        window: Mapping[str, Any] | None,
        drifted: list[dict[str, Any]],
        ctx: WindowContext,
    ) -> None:
        groups: dict[tuple[str, str, str | None], list[_Pending]] = {}
        for ev in evs:
            group = json.dumps(self._group_labels(ev.alert), sort_keys=True)
            parent = None
            if ev.kind != FIRING:
                prev = db.latest_delivery_for_alert(self.store, ev.alert.id, name, ("firing",))
                parent = prev.id if prev is not None else None
            kind = "reminder" if ev.kind == "reminder" else ev.kind
            groups.setdefault((kind, group, parent), []).append(ev)
        for (kind, group, parent), members in groups.items():
            alerts = [m.alert for m in members]
            did = _delivery_id(name, kind, alerts, now)
            payload = notification_payload(
                delivery_id=did,
                kind=kind,
                group=json.loads(group),
                alerts=[
                    alert_dict(a, m.rule.op, ctx.reference_metrics.get((a.column, a.metric)))
                    for a, m in zip(alerts, members, strict=True)
                ],
                window=window or _alert_window(alerts[0]),
                drifted=drifted,
                links=ctx.links,
                data=ctx.data,
            )
            db.insert_delivery(
                self.store,
                DeliveryRecord(
                    id=did,
                    notifier=name,
                    kind=kind,
                    created_at=now,
                    payload=payload,
                    alert_id=alerts[0].id,
                    alert_ids=tuple(a.id for a in alerts),
                    model=alerts[0].model,
                    group_key=group,
                    parent_id=parent,
                ),
            )
            for m in members:
                m.notifiers.append(name)

    def _queue_retrain(
        self,
        name: str,
        spec: NotifierSpec,
        evs: list[_Pending],
        now: datetime,
        window: Mapping[str, Any] | None,
        drifted: list[dict[str, Any]],
        ctx: WindowContext,
    ) -> None:
        by_model: dict[str, list[_Pending]] = {}
        for ev in evs:
            by_model.setdefault(ev.alert.model, []).append(ev)
        for model, members in by_model.items():
            if spec.cooldown is not None:
                last = db.last_delivery_created(
                    self.store, notifier=name, kind="retrain", model=model
                )
                if last is not None and now - last < spec.cooldown:
                    continue
            # the most severe alert speaks for the model (critical first, then rule order)
            chosen = min(
                members, key=lambda m: (m.alert.severity != "critical", self.rules.index(m.rule))
            )
            did = _delivery_id(name, "retrain", [chosen.alert], now)
            payload = retrain_payload(
                delivery_id=did,
                alert=alert_dict(chosen.alert, chosen.rule.op),
                window=window or _alert_window(chosen.alert),
                drifted=drifted,
                data=ctx.data,
                callback=ctx.callback,
            )
            db.insert_delivery(
                self.store,
                DeliveryRecord(
                    id=did,
                    notifier=name,
                    kind="retrain",
                    created_at=now,
                    payload=payload,
                    alert_id=chosen.alert.id,
                    alert_ids=(chosen.alert.id,),
                    model=model,
                ),
            )
            chosen.notifiers.append(name)


@dataclass(frozen=True)
class _Seen:
    """One window's evaluation by one rule: the figure, and the window it came from
    (``start`` as shown to people, ``end`` the key's)."""

    ev: Evaluation
    window_id: str
    start: str
    end: str
    #: the window as notifications show it, and its context (for a held slot judged later)
    winfo: Mapping[str, Any] | None = field(default=None, compare=False)
    ctx: WindowContext | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Slot:
    """What an instance of a rule without ``version`` saw of its last time slot.

    ``base``: the instance before the slot was judged (None: no row); ``seen``: the slot's
    windows judged so far, by window id; ``written``: :func:`_mark` of the row the slot
    left (None: no row), so a row changed by anything else invalidates the memory;
    ``expected``: the versions of the instance's previous slot; ``applied``: the verdict
    the slot has stepped the state with (None: none yet, a clear held back).
    """

    end: str
    base: AlertRecord | None
    seen: Mapping[str, _Seen]
    written: tuple[Any, ...] | None
    expected: frozenset[str] = frozenset()
    applied: bool | None = None

    @property
    def breached(self) -> bool:
        """Whether any version's window in the slot breaches."""
        return any(s.ev.breached for s in self.seen.values())

    @property
    def complete(self) -> bool:
        """Whether every version of the previous slot has a window in this one."""
        return self.expected <= {s.ev.version for s in self.seen.values()}

    def shown(self, old: AlertRecord | None) -> _Seen:
        """The window whose figure the instance shows: in a breaching slot a breaching one
        (the one shown already if it still breaches, else the first by version); in a clear
        slot the one shown already, else the first by version."""
        candidates = [s for s in self.seen.values() if s.ev.breached == self.breached]
        for s in candidates:
            if old is not None and s.window_id == old.last_window_id:
                return s
        return min(candidates, key=lambda s: (s.ev.version, s.window_id))


def _fresh_for(rule: Rule, seen: _Seen) -> AlertRecord:
    """A new row for the instance ``seen`` was judged for."""
    ev = seen.ev
    return _fresh(rule, ev.alert_id, ev.model, ev.column, ev.segment)


def _mark(alert: AlertRecord | None) -> tuple[Any, ...] | None:
    """What identifies the row an engine wrote (None: no row)."""
    if alert is None:
        return None
    return (alert.state, alert.breaches, alert.clears, alert.episode, alert.last_window_id,
            alert.window_end)


def _stepped(rule: Rule, old: AlertRecord, breached: bool, seen: _Seen, now: datetime) -> AlertRecord:
    """``old`` after one evaluation (breaching or clear), showing ``seen``'s figure."""
    new = step(old, breached=breached, for_windows=rule.for_windows, resolve_after=rule.resolve_after, now=now)
    return _showing(rule, new, seen, now)


def _showing(rule: Rule, alert: AlertRecord, seen: _Seen, now: datetime) -> AlertRecord:
    """``alert`` showing ``seen``'s figure, version and window."""
    ev = seen.ev
    return alert.evolve(
        value=ev.value,
        threshold=ev.threshold,
        version=ev.version,
        last_window_id=seen.window_id,
        window_start=seen.start,
        window_end=seen.end,
        updated_at=now,
        metric=rule.metric,  # a rule that kept its name may judge another figure since a reload
        severity=rule.severity,
        labels=rule.instance_labels(ev.model, ev.column, ev.segment, ev.version),
    )


def _shows(alert: AlertRecord, seen: _Seen) -> bool:
    """Whether ``alert`` already shows ``seen``'s figure."""
    return (alert.last_window_id, alert.value, alert.threshold) == (
        seen.window_id, seen.ev.value, seen.ev.threshold)


def _undoable(base: AlertRecord | None, after: AlertRecord | None) -> bool:
    """Whether a slot's step from ``base`` to ``after`` can be judged again from ``base``:
    it neither fired nor resolved the alert (whose notification is queued by now)."""
    if after is None or after.state not in (FIRING, RESOLVED):
        return True
    return base is not None and base.state == after.state and base.episode == after.episode


def _detector_key(rule: Rule, ev: Evaluation) -> str:
    """Where an instance's detector state is stored: the alert id, with the version
    for a rule without ``version`` (one detector per version, see ``_detect``)."""
    return ev.alert_id if rule.version is not None else f"{ev.alert_id}@{ev.version}"


def _window_version(window_id: str) -> str | None:
    """The version field of a window id (as :func:`storage.records.id_field` wrote it), or
    None for an id of another shape."""
    fields = window_id.split("|")
    return fields[1] if len(fields) == 5 else None


def _is_time(end: str) -> bool:
    """Whether ``end`` is a time window's end (count windows end at a row ordinal)."""
    try:
        parse_iso(end)
    except ValueError:
        return False
    return True


def _same_time(end: str, other: str | None) -> bool:
    """Whether two window ends are the same instant (the same slot)."""
    if not other:
        return False
    try:
        return parse_iso(end) == parse_iso(other)
    except ValueError:
        return end == other


def _spec(name: str, n: Any) -> NotifierSpec:
    if isinstance(n, NotifierSpec):
        return n
    kind = getattr(n, "kind", None)
    if kind is None:
        raise TypeError(f"notifier {name!r}: expected a NotifierSpec or a notifier, got {n!r}")
    return NotifierSpec(kind=kind, cooldown=getattr(n, "cooldown", None))


def _fresh(rule: Rule, aid: str, model: str, column: str, segment: str) -> AlertRecord:
    return AlertRecord(
        id=aid,
        rule=rule.name,
        model=model,
        metric=rule.metric,
        column=column,
        segment=segment,
        severity=rule.severity,
    )


def _last_breached(alert: AlertRecord) -> bool:
    """Whether the alert's last judged window breached (its counters say so)."""
    return alert.state in (PENDING, FIRING) and alert.clears == 0


def _older(end: str, last_end: str | None) -> bool:
    """Whether a window ending at ``end`` is not newer than the last judged one
    (time windows only; count windows are judged once by id)."""
    if not last_end:
        return False
    try:
        return parse_iso(end) <= parse_iso(last_end)
    except ValueError:
        return False


def _record_step(
    transitions: list[Transition], events: list[_Pending], old: AlertRecord, new: AlertRecord,
    rule: Rule, now: datetime, window_id: str | None,
) -> None:
    """Append the transition ``old`` -> ``new`` to ``transitions`` when the state changed,
    and to ``events`` a pending notification (pointing at that transition) when it fired
    or resolved; nothing when the state is the same."""
    if new.state == old.state:
        return
    transitions.append(_transition(old, new, new.state, now, window_id))
    if new.state in (FIRING, RESOLVED):
        events.append(_Pending(new, rule, new.state, len(transitions) - 1))


def _transition(
    old: AlertRecord, new: AlertRecord, event: str, now: datetime, window_id: str | None
) -> Transition:
    return Transition(
        alert_id=new.id,
        rule=new.rule,
        model=new.model,
        labels=dict(new.labels),
        from_state=old.state,
        to_state=new.state,
        event=event,
        value=new.value,
        threshold=new.threshold,
        at=now,
        window_id=window_id,
    )


def _alert_window(alert: AlertRecord) -> dict[str, Any]:
    return {
        "id": alert.last_window_id,
        "start": alert.window_start,
        "end": alert.window_end,
        "rows": None,
        "status": None,
    }


def _delivery_id(notifier: str, kind: str, alerts: Iterable[AlertRecord], now: datetime) -> str:
    """A stable id (``msg_…``): the same decision always yields the same id."""
    parts = [notifier, kind, iso(now)] + sorted(f"{a.id}#{a.episode}" for a in alerts)
    return "msg_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
