"""Notifiers: small classes that only know how to send one delivery.

- :class:`~alerts.notifiers.slack.SlackNotifier` (bot token + channel) and
  :class:`~alerts.notifiers.slack.SlackWebhookNotifier` (incoming webhook);
- :class:`~alerts.notifiers.webhook.WebhookNotifier` (signed JSON; ``kind``
  ``alert`` or ``retrain``).

Each returns a :class:`~alerts.notifiers.base.SendResult` (sent / retry /
give up); the outbox worker does the retrying.
"""

from alerts.notifiers.base import Notifier, NotifierSpec, SendResult

__all__ = ["Notifier", "NotifierSpec", "SendResult"]
