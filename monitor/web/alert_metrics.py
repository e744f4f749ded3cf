"""The per-alert series of ``/metrics``, after Prometheus' own ``ALERTS`` and ``ALERTS_FOR_STATE``.

- ``driftwarden_alert{rule,model,version,column,segment,severity,alertstate,muted}`` = 1 for
  each alert instance that is ``pending`` or ``firing`` now (``alertstate``, as in ``ALERTS``);
  inactive and resolved ones have no series (a firing alert's series ends when it resolves).
- ``driftwarden_alert_since_timestamp_seconds{rule,model,version,column,segment,severity}``:
  when that alert went active (pending, or firing at once), Unix time, as ``ALERTS_FOR_STATE``.
- ``driftwarden_alerts_not_exported{model}``: its pending and firing alerts left out by the
  caps below (0 when none), so a table of the series never hides that it is incomplete.

Silences and inhibition: Prometheus' ``ALERTS`` knows nothing of Alertmanager's silences (a
silenced alert still has its series; Alertmanager only marks it ``suppressed``), and
driftwarden's silences likewise only mute notifications while the alert's state goes on. So
muted alerts keep their series, and ``muted`` says why nobody is told: ``none``, ``silenced``
(an active silence matches its model and rule) or ``inhibited`` (a warning whose critical
twin fires), decided as the alert engine decides it (:func:`alerts.state.mute_reason`).

Label values come from the stream (version, segment) and are bounded as the drift gauges
bound theirs: an alert whose version is not among the versions the drift gauges export for
its model (:func:`monitor.web.drift_metrics.recent_versions`, the model's
``limits.max_versions`` seen last) has no series; of the rest, at most
:data:`MAX_ALERT_SERIES` per model (firing before pending, critical before warning, oldest
first). ``version`` is empty for a rule without ``version``, ``column`` and ``segment`` for
a rule on the whole window or the all-rows windows. Models not in the config have no series
(they are still counted in ``driftwarden_alerts``).

Cost: the store counts each model's active alerts and picks the ones shown
(:func:`storage.alerts.first_active`): a scrape builds at most :data:`MAX_ALERT_SERIES`
alert records per model, however many instances a stream's segment values made active
(reading every one of 100,000 active alerts took 1.6 s of the daemon's CPU per scrape).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from alerts.state import FIRING, PENDING, mute_reason, twin_key
from monitor.web.drift_metrics import recent_versions
from storage.alerts import AlertRecord, active_counts, first_active, list_silences
from storage.db import Store

#: at most this many alert series per model (``driftwarden_alert`` and its ``_since_``
#: twin): segments multiply instances (rules x columns x versions x segment values)
MAX_ALERT_SERIES = 100

_IDENTITY = ["rule", "model", "version", "column", "segment", "severity"]


def identity(a: AlertRecord) -> list[str]:
    """The label values of an alert's series, in :data:`_IDENTITY` order."""
    return [a.rule, a.model, a.labels.get("version", ""), a.column, a.segment, a.severity]


def alert_families(store: Store, models: Mapping[str, int], now: datetime, most: int = MAX_ALERT_SERIES) -> Iterator[Any]:
    """The per-alert families of ``models`` (name -> its version cap, ``limits.max_versions``)
    at ``now`` (which silences are active)."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    alert = GaugeMetricFamily(
        "driftwarden_alert",
        "1 for each alert pending or firing now (alertstate), muted=none|silenced|inhibited (as Prometheus' ALERTS)",
        labels=[*_IDENTITY, "alertstate", "muted"],
    )
    since = GaugeMetricFamily(
        "driftwarden_alert_since_timestamp_seconds",
        "When each pending or firing alert went active, Unix time (as Prometheus' ALERTS_FOR_STATE)",
        labels=_IDENTITY,
    )
    left = GaugeMetricFamily(
        "driftwarden_alerts_not_exported",
        f"Pending and firing alerts without a driftwarden_alert series (version not exported, or over {most} per model)",
        labels=["model"],
    )
    counts = active_counts(store, (PENDING, FIRING))
    silences = list_silences(store, active_at=now) if counts else []
    for model in sorted(models):
        total = counts.get(model, 0)
        shown = first_active(store, model, recent_versions(store, model, models[model]), most, (PENDING, FIRING)) if total else []
        # the firing critical alerts that inhibit a shown warning are all shown: they sort
        # before every warning, and a twin has the same version, so the same admission
        firing_critical = {twin_key(a) for a in shown if a.state == FIRING and a.severity == "critical"}
        for a in shown:
            labels = identity(a)
            alert.add_metric([*labels, a.state, mute_reason(a, silences, firing_critical) or "none"], 1.0)
            if a.started_at is not None:
                since.add_metric(labels, a.started_at.timestamp())
        left.add_metric([model], total - len(shown))
    yield from (alert, since, left)
