"""The names the daemon relies on (the contract in issue 4) exist with these signatures."""

from __future__ import annotations

import inspect

import alerts.engine
import alerts.notifiers.slack
import alerts.notifiers.webhook
import alerts.outbox
import alerts.payloads
import alerts.rules
import storage.alerts


def params(obj) -> list[str]:
    return [p for p in inspect.signature(obj).parameters if p != "self"]


def test_contract_names_and_parameters():
    assert params(alerts.rules.Rule)[:16] == [
        "name", "metric", "op", "threshold", "model", "column", "segment", "version", "relative",
        "for_windows", "resolve_after", "severity", "labels", "notifiers", "repeat_interval",
        "no_data_for",
    ]  # fmt: skip
    assert params(alerts.engine.AlertEngine) == ["store", "rules", "notifiers", "clock", "settings", "owner"]
    assert params(alerts.engine.AlertEngine.on_window) == ["window", "metrics", "context", "reevaluate"]
    assert params(alerts.engine.AlertEngine.on_tick) == ["now"]
    assert params(alerts.engine.AlertEngine.silence)[:5] == [
        "model", "rule", "until", "created_by", "comment"
    ]  # fmt: skip
    assert alerts.engine.WindowContext is alerts.payloads.WindowContext
    assert params(alerts.outbox.DeliveryWorker)[:7] == [
        "store", "notifiers", "clock", "rng", "max_attempts", "base_delay", "max_delay"
    ]  # fmt: skip
    assert params(alerts.notifiers.slack.SlackNotifier)[:5] == [
        "name", "token", "channel", "base_url", "timeout"
    ]  # fmt: skip
    assert params(alerts.notifiers.webhook.WebhookNotifier)[:6] == [
        "name", "url", "secret", "kind", "cooldown", "timeout"
    ]  # fmt: skip
    assert params(storage.alerts.list_alerts)[:3] == ["store", "state", "model"]
    assert params(storage.alerts.delivery_counts) == ["store"]
    for name in ("on_window", "on_tick", "silence", "list_silences", "observe_model_activity"):
        assert callable(getattr(alerts.engine.AlertEngine, name))
    assert callable(alerts.outbox.DeliveryWorker.run_once)
    assert callable(alerts.outbox.DeliveryWorker.next_due)
