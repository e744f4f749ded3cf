"""The alert lifecycle as one pure function (Prometheus semantics).

::

    inactive --breach--> pending --(for_windows breaches in a row)--> firing
    inactive --breach, for_windows == 1--------------------------------> firing
    pending  --clear---> inactive          (pending never notifies)
    firing   --(resolve_after clears in a row)--> resolved
    resolved --breach--> pending / firing  (a new episode)

Only ``firing`` (entering it) and ``resolved`` are notified; the engine adds
reminders while firing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from storage.alerts import AlertRecord, SilenceRecord

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"


def step(
    alert: AlertRecord,
    *,
    breached: bool,
    for_windows: int,
    resolve_after: int,
    now: datetime,
) -> AlertRecord:
    """The alert after one evaluation (breaching or clear) at ``now``."""
    state = alert.state
    if breached:
        if state in (INACTIVE, RESOLVED):
            alert = alert.evolve(breaches=1, clears=0, started_at=now)
            if for_windows <= 1:
                return _fire(alert, now)
            return alert.evolve(state=PENDING)
        alert = alert.evolve(breaches=alert.breaches + 1, clears=0)
        if state == PENDING and alert.breaches >= for_windows:
            return _fire(alert, now)
        return alert
    # a clear evaluation
    if state == PENDING:
        return alert.evolve(state=INACTIVE, breaches=0, clears=0, started_at=None)
    if state == FIRING:
        alert = alert.evolve(clears=alert.clears + 1)
        if alert.clears >= resolve_after:
            return alert.evolve(state=RESOLVED, resolved_at=now, breaches=0)
        return alert
    return alert.evolve(breaches=0, clears=alert.clears + 1)


def _fire(alert: AlertRecord, now: datetime) -> AlertRecord:
    return alert.evolve(
        state=FIRING,
        fired_at=now,
        resolved_at=None,
        episode=alert.episode + 1,
        last_notified_at=None,
    )


def twin_key(alert: AlertRecord) -> tuple[str, ...]:
    """What a warning shares with the critical alert that inhibits it: model, figure,
    column, segment and version (the rule's name and severity differ)."""
    return (alert.model, alert.metric, alert.column, alert.segment, alert.labels.get("version", ""))


def mute_reason(
    alert: AlertRecord, silences: Sequence[SilenceRecord], firing_critical: Collection[tuple[str, ...]]
) -> str:
    """Why nobody is told about ``alert``: ``"silenced"`` (one of the active ``silences``
    matches its model and rule), ``"inhibited"`` (a warning whose critical twin, by
    :func:`twin_key`, is among ``firing_critical``), or ``""`` (not muted)."""
    if any(s.matches(alert.model, alert.rule) for s in silences):
        return "silenced"
    if alert.severity == "warning" and twin_key(alert) in firing_critical:
        return "inhibited"
    return ""
