"""The ``alerts``, ``deliveries`` (the outbox) and ``silences`` tables.

Writers run inside ``store.transaction()`` (the alert engine's transitions and
their deliveries commit together with the window's figures). Times are written
with :func:`storage.records.iso` (UTC, millisecond precision), so ISO strings
compare in time order.

Delivery ``status`` is ``pending`` (waiting for its next attempt), ``sent``
(a 2xx answer) or ``dead`` (permanent failure or retry limit reached).

Claims: an outbox worker takes a due delivery with :func:`claim_delivery`
(``claimed_by``, ``claimed_until``: a lease) before sending it, and recording the
attempt ends the claim. On a shared store (PostgreSQL) the claim is ``SELECT ...
FOR UPDATE SKIP LOCKED``, so instances never pick the same row, and a claim of
an instance that died is taken over when its lease has passed. On SQLite one
instance owns the file: a claim left by an earlier run of it is taken over at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.db import Store
from storage.records import iso, parse_iso

ALERT_STATES = ("inactive", "pending", "firing", "resolved")
DELIVERY_STATUSES = ("pending", "sent", "dead")


# -- alerts ------------------------------------------------------------------------


def alert_lock_key(model: str) -> str:
    """The :meth:`storage.db.Store.lock` key that serializes changes to one model's alert
    state between instances sharing a store (the window flush, the tick)."""
    return f"alerts:{model}"


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert instance (rule x model x column/segment/version) as stored.

    ``episode`` counts how often it has fired; ``breaches``/``clears`` are the
    current runs of consecutive breaching / clear evaluations.
    """

    id: str
    rule: str
    model: str
    state: str = "inactive"
    labels: Mapping[str, str] = field(default_factory=dict)
    metric: str = ""
    column: str = ""
    segment: str = ""
    version: str = ""
    severity: str = "warning"
    value: float | None = None
    threshold: float | None = None
    started_at: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_window_id: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    breaches: int = 0
    clears: int = 0
    episode: int = 0
    last_notified_at: datetime | None = None
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> AlertRecord:
        return replace(self, **changes)


_ALERT_COLUMNS = (
    "id", "rule", "model", "state", "labels", "metric", "column", "segment", "version",
    "severity", "value", "threshold", "started_at", "fired_at", "resolved_at",
    "last_window_id", "window_start", "window_end", "breaches", "clears", "episode",
    "last_notified_at", "updated_at",
)  # fmt: skip
_ALERT_TIMES = ("started_at", "fired_at", "resolved_at", "last_notified_at", "updated_at")


_UPSERT_ALERT = (
    f"INSERT INTO alerts ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in _ALERT_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _ALERT_COLUMNS)}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f'"{c}" = excluded."{c}"' for c in _ALERT_COLUMNS if c != "id")
)


def _t(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _pt(value: str | None) -> datetime | None:
    return None if value is None else parse_iso(value)


def _alert_from_row(row: Mapping[str, Any]) -> AlertRecord:
    data = {k: row[k] for k in _ALERT_COLUMNS if k in row}
    data["labels"] = json.loads(row.get("labels") or "{}")
    for k in _ALERT_TIMES:
        data[k] = _pt(row.get(k))
    return AlertRecord(**data)


def upsert_alert(store: Store, alert: AlertRecord) -> None:
    """Insert or replace one alert row (inside a transaction)."""
    values = []
    for name in _ALERT_COLUMNS:
        v = getattr(alert, name)
        if name == "labels":
            v = json.dumps(dict(v), sort_keys=True)
        elif name in _ALERT_TIMES:
            v = _t(v)
        values.append(v)
    store.execute(_UPSERT_ALERT, values)


def get_alert(store: Store, alert_id: str) -> AlertRecord | None:
    rows = store.query("SELECT * FROM alerts WHERE id = ?", (alert_id,))
    return _alert_from_row(rows[0]) if rows else None


def alerts_by_id(store: Store, ids: Iterable[str]) -> dict[str, AlertRecord]:
    wanted = sorted(set(ids))
    out: dict[str, AlertRecord] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ",".join("?" for _ in chunk)
        for row in store.query(f"SELECT * FROM alerts WHERE id IN ({marks})", chunk):
            rec = _alert_from_row(row)
            out[rec.id] = rec
    return out


def alerts_of_model(store: Store, model: str) -> dict[str, AlertRecord]:
    return {
        r["id"]: _alert_from_row(r)
        for r in store.query("SELECT * FROM alerts WHERE model = ?", (model,))
    }


def active_alerts(store: Store, states: Sequence[str] = ("pending", "firing")) -> list[AlertRecord]:
    """Alerts in the given states, oldest first."""
    marks = ",".join("?" for _ in states)
    rows = store.query(
        f"SELECT * FROM alerts WHERE state IN ({marks}) ORDER BY started_at, id", list(states)
    )
    return [_alert_from_row(r) for r in rows]


def active_counts(store: Store, states: Sequence[str] = ("pending", "firing")) -> dict[str, int]:
    """How many alerts each model has in ``states`` (models without any are absent)."""
    marks = ",".join("?" for _ in states)
    rows = store.query(f"SELECT model, COUNT(*) AS n FROM alerts WHERE state IN ({marks}) GROUP BY model", list(states))
    return {r["model"]: int(r["n"]) for r in rows}


def first_active(
    store: Store, model: str, versions: Iterable[str], most: int, states: Sequence[str] = ("pending", "firing")
) -> list[AlertRecord]:
    """At most ``most`` of ``model``'s alerts in ``states`` whose ``version`` label is
    absent or among ``versions``: firing before the others, critical before the other
    severities, then by ``started_at`` (oldest first, none last) and id.

    Chosen and cut by the store: a model with a flood of active alerts (one per segment
    value, column and version) costs a scrape ``most`` alert records, not one per alert."""
    allowed = sorted({"", *versions})
    state_marks = ",".join("?" for _ in states)
    version_marks = ",".join("?" for _ in allowed)
    version = store.dialect.json_key("labels", "version")
    rows = store.query(
        f"SELECT * FROM alerts WHERE model = ? AND state IN ({state_marks})"
        f" AND COALESCE({version}, '') IN ({version_marks})"
        " ORDER BY CASE WHEN state = 'firing' THEN 0 ELSE 1 END, CASE WHEN severity = 'critical' THEN 0 ELSE 1 END,"
        " CASE WHEN started_at IS NULL THEN 1 ELSE 0 END, started_at, id LIMIT ?",
        [model, *states, *allowed, max(int(most), 0)],
    )
    return [_alert_from_row(r) for r in rows]


def list_alerts(
    store: Store,
    state: str | None = None,
    model: str | None = None,
    *,
    rule: str | None = None,
    include_inactive: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Alerts as dicts of the ``alerts`` columns (``labels`` parsed into a dict),
    most recently changed first. ``state=None`` lists every state except
    ``inactive`` (instances that went pending and cleared) unless
    ``include_inactive``."""
    where, params = [], []
    if state is not None:
        where.append("state = ?")
        params.append(state)
    elif not include_inactive:
        where.append("state != 'inactive'")
    if model is not None:
        where.append("model = ?")
        params.append(model)
    if rule is not None:
        where.append("rule = ?")
        params.append(rule)
    sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY updated_at DESC, id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = store.query(sql, params)
    for r in rows:
        r["labels"] = json.loads(r.get("labels") or "{}")
    return rows


def known_models(store: Store) -> list[str]:
    """Models that have windows or alerts (for no-data rules after a restart)."""
    rows = store.query("SELECT model FROM windows UNION SELECT model FROM alerts ORDER BY model")
    return [r["model"] for r in rows]


def latest_window_at(store: Store, model: str) -> datetime | None:
    """When the newest window of ``model`` was stored (by any instance), or None."""
    rows = store.query("SELECT MAX(computed_at) AS t FROM windows WHERE model = ?", (model,))
    return _pt(rows[0]["t"]) if rows and rows[0]["t"] else None


def alert_counts(store: Store) -> dict[tuple[str, str], int]:
    """``{(state, severity): count}`` for ``/metrics``."""
    rows = store.query("SELECT state, severity, COUNT(*) AS n FROM alerts GROUP BY state, severity")
    return {(r["state"], r["severity"]): int(r["n"]) for r in rows}


# -- deliveries (the outbox) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One notification to one notifier: what to send and how sending went.

    ``payload`` is everything the notifier needs to render the message, frozen
    when the alert transition happened (so retries send the same content).
    ``parent_id`` points at the firing notification a resolution or reminder
    belongs to (Slack threads it there); ``response`` is what the receiver
    answered that later deliveries need (Slack's channel and ``ts``).
    """

    id: str
    notifier: str
    kind: str
    created_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    alert_id: str | None = None
    alert_ids: tuple[str, ...] = ()
    model: str = ""
    group_key: str = ""
    parent_id: str | None = None
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    response: Mapping[str, Any] | None = None
    updated_at: datetime | None = None
    #: Why the stored row could not be read back (bad JSON, bad timestamp): such a
    #: delivery cannot be sent, the outbox marks it dead with this reason.
    payload_error: str | None = None


def _delivery_from_row(row: Mapping[str, Any]) -> DeliveryRecord:
    """A row as a record; a row that cannot be decoded comes back with
    ``payload_error`` set (and an empty payload) instead of raising, so one
    corrupt row cannot stop the outbox."""
    try:
        return _decode_delivery(row)
    except Exception as exc:  # noqa: BLE001 - JSONDecodeError, ValueError, TypeError, ...
        return DeliveryRecord(
            id=str(row.get("id")),
            notifier=str(row.get("notifier")),
            kind=str(row.get("kind")),
            created_at=_pt_or_epoch(row.get("created_at")),
            parent_id=row.get("parent_id"),
            status=str(row.get("status")),
            attempts=_int_or_zero(row.get("attempts")),
            next_attempt_at=_pt_or_none(row.get("next_attempt_at")),
            last_error=row.get("last_error"),
            delivered_at=_pt_or_none(row.get("delivered_at")),
            payload_error=f"stored row unreadable: {type(exc).__name__}: {exc}"[:500],
        )


def _pt_or_epoch(value: Any) -> datetime:
    try:
        return parse_iso(value)
    except Exception:  # noqa: BLE001
        return datetime(1970, 1, 1, tzinfo=UTC)


def _pt_or_none(value: Any) -> datetime | None:
    try:
        return _pt(value)
    except Exception:  # noqa: BLE001
        return None


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _decode_delivery(row: Mapping[str, Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        notifier=row["notifier"],
        kind=row["kind"],
        created_at=parse_iso(row["created_at"]),
        payload=json.loads(row.get("payload") or "{}"),
        alert_id=row.get("alert_id"),
        alert_ids=tuple(json.loads(row.get("alert_ids") or "[]")),
        model=row.get("model") or "",
        group_key=row.get("group_key") or "",
        parent_id=row.get("parent_id"),
        status=row["status"],
        attempts=int(row["attempts"]),
        next_attempt_at=_pt(row.get("next_attempt_at")),
        last_error=row.get("last_error"),
        delivered_at=_pt(row.get("delivered_at")),
        response=json.loads(row["response"]) if row.get("response") else None,
        updated_at=_pt(row.get("updated_at")),
    )


def insert_delivery(store: Store, d: DeliveryRecord) -> bool:
    """Add a delivery to the outbox; a second insert of the same id is ignored.

    Returns whether a row was inserted."""
    cur = store.execute(
        "INSERT INTO deliveries (id, alert_id, notifier, kind, status, attempts,"
        " next_attempt_at, last_error, delivered_at, created_at, payload, model, group_key,"
        " alert_ids, parent_id, response, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (id) DO NOTHING",
        (
            d.id, d.alert_id, d.notifier, d.kind, d.status, d.attempts,
            _t(d.next_attempt_at or d.created_at), d.last_error, _t(d.delivered_at),
            iso(d.created_at), json.dumps(d.payload, sort_keys=True), d.model, d.group_key,
            json.dumps(list(d.alert_ids)), d.parent_id,
            None if d.response is None else json.dumps(d.response, sort_keys=True),
            _t(d.updated_at or d.created_at),
        ),
    )  # fmt: skip
    return cur.rowcount > 0


def get_delivery(store: Store, delivery_id: str) -> DeliveryRecord | None:
    rows = store.query("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
    return _delivery_from_row(rows[0]) if rows else None


def pending_before(store: Store, d: DeliveryRecord) -> DeliveryRecord | None:
    """The oldest delivery still pending to ``d``'s notifier for ``d``'s alert group that
    was created before ``d`` (None: there is none, or ``d`` has no group). A delivery whose
    parent is ``d`` is not one: it waits for ``d`` (clocks that disagree can stamp a
    resolution before its firing message, and each would wait for the other)."""
    if not d.group_key:
        return None
    rows = store.query(
        "SELECT * FROM deliveries WHERE status = 'pending' AND notifier = ? AND group_key = ? AND created_at < ?"
        " AND (parent_id IS NULL OR parent_id != ?) ORDER BY created_at LIMIT 1",
        (d.notifier, d.group_key, iso(d.created_at), d.id),
    )
    return _delivery_from_row(rows[0]) if rows else None


def _claimable(store: Store, now: datetime, owner: str) -> tuple[str, list[Any]]:
    """A condition (and its parameters): the delivery is not claimed by a live worker."""
    if store.shared:
        return "(claimed_until IS NULL OR claimed_until <= ?)", [iso(now)]
    # one instance per SQLite file: another owner's claim is an earlier run's
    return "(claimed_until IS NULL OR claimed_until <= ? OR claimed_by != ?)", [iso(now), owner]


def due_deliveries(
    store: Store,
    now: datetime,
    limit: int = 100,
    *,
    notifier: str | None = None,
    exclude: Sequence[str] = (),
    claimable_by: str | None = None,
) -> list[DeliveryRecord]:
    """Pending deliveries whose next attempt is due, oldest first; only those to
    ``notifier`` when given, none to the ``exclude``d notifiers, only those
    ``claimable_by`` could claim now when given."""
    where, params = ["status = 'pending'", "next_attempt_at <= ?"], [iso(now)]
    if claimable_by is not None:
        cond, cparams = _claimable(store, now, claimable_by)
        where.append(cond)
        params.extend(cparams)
    if notifier is not None:
        where.append("notifier = ?")
        params.append(notifier)
    if exclude:
        where.append(f"notifier NOT IN ({','.join('?' for _ in exclude)})")
        params.extend(exclude)
    rows = store.query(
        f"SELECT * FROM deliveries WHERE {' AND '.join(where)} ORDER BY created_at, rowid LIMIT ?",
        (*params, int(limit)),
    )
    return [_delivery_from_row(r) for r in rows]


def claim_delivery(
    store: Store, *, notifier: str, now: datetime, owner: str, lease_until: datetime
) -> DeliveryRecord | None:
    """Claim the oldest due, unclaimed pending delivery to ``notifier`` for ``owner``
    until ``lease_until``; None when there is none. Instances claiming at once get
    different rows (``SKIP LOCKED``)."""
    cond, cparams = _claimable(store, now, owner)
    with store.transaction():
        rows = store.query(
            "UPDATE deliveries SET claimed_by = ?, claimed_until = ? WHERE id = (SELECT id FROM"
            " deliveries WHERE status = 'pending' AND next_attempt_at <= ? AND notifier = ?"
            f" AND {cond} ORDER BY created_at, rowid LIMIT 1{store.dialect.skip_locked})"
            " RETURNING *",
            (owner, iso(lease_until), iso(now), notifier, *cparams),
        )
    return _delivery_from_row(rows[0]) if rows else None


def release_claim(store: Store, delivery_id: str, owner: str) -> None:
    """Give a claimed delivery back unchanged (another worker may take it at once)."""
    store.execute(
        "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ?",
        (delivery_id, owner),
    )


def reschedule_after_step_back(store: Store, notifier: str, now: datetime, slack: timedelta) -> int:
    """Pending deliveries to ``notifier`` last scheduled (``updated_at``) after ``now`` +
    ``slack`` were scheduled by a wall clock since stepped back: each keeps the wait it was
    given (``next_attempt_at - updated_at``, at least 0), counted from ``now``, so that it
    does not also wait out the step. Returns how many were rescheduled.

    The usual case is one read of migration 15's partial index (pending deliveries by
    notifier and ``updated_at``) finding nothing, and no write.
    """
    rows = store.query(
        "SELECT id, next_attempt_at, updated_at FROM deliveries WHERE status = 'pending'"
        " AND notifier = ? AND updated_at > ?",
        (notifier, iso(now + slack)),
    )
    for r in rows:
        wait = max(_pt(r["next_attempt_at"]) - _pt(r["updated_at"]), timedelta(0))
        store.execute(
            "UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
            (iso(now + wait), iso(now), r["id"]),
        )
    return len(rows)


def next_due(store: Store) -> datetime | None:
    """When the earliest pending delivery is due (None when nothing is pending)."""
    rows = store.query("SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE status = 'pending'")
    return _pt(rows[0]["t"]) if rows and rows[0]["t"] else None


def record_attempt(
    store: Store,
    delivery_id: str,
    *,
    status: str,
    attempts: int,
    now: datetime,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
    response: Mapping[str, Any] | None = None,
    claimed_by: str | None = None,
) -> bool:
    """Store an attempt's outcome and end the claim. ``response`` (when given) replaces
    the stored one. With ``claimed_by``, only while that worker still holds the claim
    (False: its lease passed and another worker took the delivery over)."""
    if status not in DELIVERY_STATUSES:
        raise ValueError(f"unknown delivery status {status!r}")
    cur = store.execute(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ?,"
        " delivered_at = CASE WHEN ? = 'sent' THEN ? ELSE delivered_at END,"
        " response = COALESCE(?, response), updated_at = ?, claimed_by = NULL,"
        " claimed_until = NULL WHERE id = ?" + (" AND claimed_by = ?" if claimed_by else ""),
        (
            status, attempts, _t(next_attempt_at), error, status, iso(now),
            None if response is None else json.dumps(response, sort_keys=True), iso(now),
            delivery_id, *((claimed_by,) if claimed_by else ()),
        ),
    )  # fmt: skip
    return cur.rowcount > 0


def set_response(
    store: Store, delivery_id: str, response: Mapping[str, Any], now: datetime
) -> None:
    store.execute(
        "UPDATE deliveries SET response = ?, updated_at = ? WHERE id = ?",
        (json.dumps(response, sort_keys=True), iso(now), delivery_id),
    )


def defer_delivery(store: Store, delivery_id: str, until: datetime, now: datetime) -> None:
    """Move a pending delivery's next attempt without counting an attempt."""
    store.execute(
        "UPDATE deliveries SET next_attempt_at = ?, updated_at = ?, claimed_by = NULL,"
        " claimed_until = NULL WHERE id = ? AND status = 'pending'",
        (iso(until), iso(now), delivery_id),
    )


def list_deliveries(
    store: Store,
    *,
    alert_id: str | None = None,
    status: str | None = None,
    notifier: str | None = None,
    kind: str | None = None,
) -> list[DeliveryRecord]:
    """Deliveries in creation order; ``alert_id`` matches any alert of a grouped one."""
    where, params = [], []
    if alert_id is not None:
        where.append(
            f"EXISTS (SELECT 1 FROM {store.dialect.json_values('deliveries.alert_ids')} WHERE j.value = ?)"
        )
        params.append(alert_id)
    for col, val in (("status", status), ("notifier", notifier), ("kind", kind)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    sql = "SELECT * FROM deliveries" + (" WHERE " + " AND ".join(where) if where else "")
    rows = store.query(sql + " ORDER BY created_at, rowid", params)
    return [_delivery_from_row(r) for r in rows]


def latest_delivery_for_alert(
    store: Store, alert_id: str, notifier: str, kinds: Sequence[str] = ("firing",)
) -> DeliveryRecord | None:
    """The newest delivery of ``kinds`` to ``notifier`` that included ``alert_id``."""
    marks = ",".join("?" for _ in kinds)
    rows = store.query(
        f"SELECT * FROM deliveries WHERE notifier = ? AND kind IN ({marks})"
        f" AND EXISTS (SELECT 1 FROM {store.dialect.json_values('deliveries.alert_ids')}"
        " WHERE j.value = ?)"
        " ORDER BY created_at DESC, rowid DESC LIMIT 1",
        (notifier, *kinds, alert_id),
    )
    return _delivery_from_row(rows[0]) if rows else None


def last_delivery_created(store: Store, *, notifier: str, kind: str, model: str) -> datetime | None:
    """When the newest ``kind`` delivery to ``notifier`` for ``model`` was queued
    (any status): the retraining cooldown, derived from the outbox so it
    survives restarts."""
    rows = store.query(
        "SELECT MAX(created_at) AS t FROM deliveries WHERE notifier = ? AND kind = ? AND model = ?",
        (notifier, kind, model),
    )
    return _pt(rows[0]["t"]) if rows and rows[0]["t"] else None


def delivery_counts(store: Store) -> dict[tuple[str, str], int]:
    """``{(notifier, status): count}`` over the outbox, for ``/metrics``
    (e.g. ``driftwarden_deliveries{notifier=...,status="dead"}``)."""
    rows = store.query(
        "SELECT notifier, status, COUNT(*) AS n FROM deliveries GROUP BY notifier, status"
    )
    return {(r["notifier"], r["status"]): int(r["n"]) for r in rows}


# -- silences ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """Mutes notifications for alerts of ``model`` and/or ``rule`` (None = any)
    while ``starts_at <= now < ends_at``."""

    id: str
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    model: str | None = None
    rule: str | None = None
    created_by: str = ""
    comment: str = ""

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The silence as the API and ``silence list --json`` give it: times as every other
        time there (``2026-11-23T14:00:00.000Z``), and whether it is ``active`` at ``now``."""
        out = asdict(self)
        for key in ("starts_at", "ends_at", "created_at"):
            out[key] = iso(out[key])
        return out | {"active": self.active(now)}

    def matches(self, model: str, rule: str) -> bool:
        return (self.model is None or self.model == model) and (
            self.rule is None or self.rule == rule
        )


def _silence_from_row(row: Mapping[str, Any]) -> SilenceRecord:
    return SilenceRecord(
        id=row["id"],
        model=row.get("model"),
        rule=row.get("rule"),
        starts_at=parse_iso(row["starts_at"]),
        ends_at=parse_iso(row["ends_at"]),
        created_at=parse_iso(row["created_at"]),
        created_by=row.get("created_by") or "",
        comment=row.get("comment") or "",
    )


def insert_silence(store: Store, s: SilenceRecord) -> None:
    store.execute(
        "INSERT INTO silences (id, model, rule, starts_at, ends_at, created_by, comment, created_at)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (
            s.id, s.model, s.rule, iso(s.starts_at), iso(s.ends_at), s.created_by, s.comment,
            iso(s.created_at),
        ),
    )  # fmt: skip


def list_silences(store: Store, *, active_at: datetime | None = None, limit: int | None = None) -> list[SilenceRecord]:
    """All silences, or those active at ``active_at``; newest first, at most ``limit``."""
    tail = "" if limit is None else f" LIMIT {int(limit)}"
    if active_at is None:
        rows = store.query("SELECT * FROM silences ORDER BY created_at DESC, id" + tail)
    else:
        t = iso(active_at)
        rows = store.query(
            "SELECT * FROM silences WHERE starts_at <= ? AND ends_at > ?"
            " ORDER BY created_at DESC, id" + tail,
            (t, t),
        )
    return [_silence_from_row(r) for r in rows]


def expire_silence(store: Store, silence_id: str, now: datetime) -> bool:
    """End a silence now (kept for the record). Returns whether it was active."""
    cur = store.execute(
        "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
        (iso(now), silence_id, iso(now)),
    )
    return cur.rowcount > 0
