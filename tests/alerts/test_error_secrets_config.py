"""The config's secrets never reach a stored error text: a receiver that echoes the
request (a Slack incoming-webhook path, the bot token in ``Authorization``) leaves them
out of the delivery's ``last_error``, which the dashboard and the command line show
(:mod:`storage.redaction`, registered when the config is read). The same holds for a
window's error and a dead letter's reason."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.service.alerting import Alerting
from storage import alerts as db
from storage.dead_letters import DeadLetter, write_dead_letters
from storage.overview import recent_dead_letters
from storage.records import WindowKey, WindowRecord
from storage.windows import write_window
from tests.alerts.conftest import Feed
from tests.alerts.echo import EchoReceiver

MODEL = '[[models]]\nname = "churn"\nreference = "ref.csv"\nfeatures.numerical = ["age"]\n'
RULE = '[[rules]]\nname = "drift"\nmetric = "drift_share"\nop = ">"\nthreshold = 0.3\nnotifiers = ["ops"]\n'
#: an incoming-webhook URL's secret parts, as Slack makes them
TEAM, HOOK, HOOK_TOKEN = "T04KZ8QAB1C", "B07RT2MNX9D", "vQ8zK2mLpX7wR4tN9sYc3bHf"
BOT_TOKEN = "xoxb-1234567890-0987654321-ZyXwVuTsRqPoNmLkJiHgFeDc"


def _alerting(folder: Path, notifier: str, store: object, clock: object) -> Alerting:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ref.csv").write_text("age\n1\n2\n")
    (folder / "config.toml").write_text(MODEL + RULE + notifier)
    return Alerting(load_config(folder / "config.toml"), store, clock=clock)  # type: ignore[arg-type]


def _last_error(alerting: Alerting, store: object, clock: object) -> str:
    Feed(alerting.engine, store, clock).window({"drift_share": 0.6})  # type: ignore[arg-type]
    assert alerting.worker.run_once() == 1
    [d] = db.list_deliveries(store, notifier="ops")  # type: ignore[arg-type]
    assert d.last_error is not None
    return d.last_error


def test_slack_incoming_webhook_path_echoed_by_a_404_is_not_stored(
    tmp_path: Path, store, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EchoReceiver(404) as rx:
        monkeypatch.setenv("DW_TEST_HOOK_URL", f"{rx.base}/services/{TEAM}/{HOOK}/{HOOK_TOKEN}")
        alerting = _alerting(tmp_path, '[notifiers.ops]\ntype = "slack"\nwebhook_url_env = "DW_TEST_HOOK_URL"\n',
                             store, clock)
        error = _last_error(alerting, store, clock)
        assert rx.paths == [f"/services/{TEAM}/{HOOK}/{HOOK_TOKEN}"]  # the receiver did echo it
    for secret in (HOOK_TOKEN, TEAM, HOOK):
        assert secret not in error
    assert error.startswith("HTTP 404: Cannot POST /…")


def test_slack_bot_token_echoed_by_a_500_is_not_stored(
    tmp_path: Path, store, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EchoReceiver(500) as rx:
        monkeypatch.setenv("DW_TEST_BOT_TOKEN", BOT_TOKEN)
        alerting = _alerting(tmp_path, f'[notifiers.ops]\ntype = "slack"\ntoken_env = "DW_TEST_BOT_TOKEN"\n'
                                       f'channel = "#ml"\nbase_url = "{rx.base}/api/"\n', store, clock)
        error = _last_error(alerting, store, clock)
    assert BOT_TOKEN not in error and BOT_TOKEN[5:] not in error
    assert error.startswith("HTTP 500") and "(authorization: " in error and "***" in error


def test_a_window_error_and_a_dead_letter_reason_are_stored_without_a_config_secret(
    tmp_path: Path, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception's text (``internal: ...``) quoting a configured secret is stored without it."""
    (tmp_path / "ref.csv").write_text("age\n1\n2\n")
    (tmp_path / "config.toml").write_text(MODEL + '[daemon]\napi_token_env = "DW_TEST_API_TOKEN"\n')
    monkeypatch.setenv("DW_TEST_API_TOKEN", "api-token-5f2c9e71b8d4")
    load_config(tmp_path / "config.toml")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    key = WindowKey("churn", "v1", "", "2026-01-01T00:00:00.000Z", "2026-01-01T00:15:00.000Z")
    with store.transaction():
        write_window(store, WindowRecord(key, 10, "error", now, error="internal: boom api-token-5f2c9e71b8d4"), [])
        write_dead_letters(store, [DeadLetter("p", 0, 1, "internal: boom api-token-5f2c9e71b8d4", b"{}", now)])
    [row] = store.query("SELECT error FROM windows")
    assert row["error"] == "internal: boom ***"
    assert [x["reason"] for x in recent_dead_letters(store, 10)] == ["internal: boom ***"]
