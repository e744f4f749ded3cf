"""Alerting: a small Alertmanager for driftwarden.

- :mod:`alerts.rules` — :class:`~alerts.rules.Rule`: which figure, compared how, for how long;
- :mod:`alerts.state` — the lifecycle inactive → pending → firing → resolved (pure);
- :mod:`alerts.engine` — :class:`~alerts.engine.AlertEngine`: rules → persisted state →
  grouped deliveries in the outbox, silences, inhibition, reminders, no-data;
- :mod:`alerts.payloads` — what a notification says (frozen into the outbox);
- :mod:`alerts.outbox` — :class:`~alerts.outbox.DeliveryWorker`: retries, backoff, dead letters;
- :mod:`alerts.notifiers` — Slack (bot / incoming webhook) and signed webhooks.

The SQL lives in :mod:`storage.alerts`.
"""
