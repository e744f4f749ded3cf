"""A receiver URL's secrets (a token in its path or query, ``user:password@``) never reach
a delivery's ``last_error``, whatever the receiver answers or if it refuses: its pages
echoing the request are stored without them, and a failed connection names the receiver
as ``http://host:port/…``. The error still says what happened (the status, the host)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from alerts.notifiers.slack import SlackWebhookNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.outbox import DeliveryWorker
from alerts.rules import Rule
from monitor.config import load_config
from monitor.demo.broker import free_port
from monitor.service.alerting import Alerting
from storage import alerts as db
from tests.alerts.conftest import Feed, make_engine, rng
from tests.alerts.echo import EchoReceiver

PATH_TOKEN, QUERY_TOKEN = "k7QzL9mX2pR4tV8wY1sA", "q5uV7wX9yZ1aB3cD"
USER, PASSWORD = "alerts", "pa55-w0rd-h00k"
#: what must appear in no stored text: each secret, and the Basic credentials made of them
SECRETS = (PATH_TOKEN, QUERY_TOKEN, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def _hook(base: str) -> str:
    """A receiver URL under ``base`` (``http://127.0.0.1:PORT``) with every kind of secret."""
    return base.replace("http://", f"http://{USER}:{PASSWORD}@") + f"/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}"


def _send(store, clock, notifier) -> str:  # noqa: ANN001 - fixtures
    """The ``last_error`` of the one delivery an alert to ``notifier`` made, after one attempt."""
    notifiers = {"ops": notifier}
    Feed(make_engine(store, clock, (Rule("drift", "drift_share", ">", 0.3, notifiers=("ops",)),), notifiers),
         store, clock).window({"drift_share": 0.6})
    assert DeliveryWorker(store, notifiers, clock, rng()).run_once() == 1
    [d] = db.list_deliveries(store, notifier="ops")
    assert d.last_error is not None
    return d.last_error


def _clean(error: str) -> None:
    for secret in SECRETS:
        assert secret not in error, (secret, error)


@pytest.mark.parametrize("status", [404, 500])
def test_a_webhook_receiver_echoing_its_url_leaves_no_secret_in_last_error(store, clock, status: int) -> None:
    with EchoReceiver(status) as rx:
        error = _send(store, clock, WebhookNotifier("ops", _hook(rx.base)))
        assert rx.paths == [f"/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}"]  # the page did quote them
    _clean(error)
    assert error == f"HTTP {status}: Cannot POST /… (authorization: Basic ***)"


def test_a_refused_connection_names_the_receiver_host_but_no_secret(store, clock) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    error = _send(store, clock, WebhookNotifier("ops", _hook(base)))
    _clean(error)
    assert error.startswith("ConnectError: ") and error.endswith(f"(to {base}/…)")


def test_a_slack_incoming_webhook_built_without_a_config_leaves_no_token(store, clock) -> None:
    with EchoReceiver(403) as rx:
        error = _send(store, clock, SlackWebhookNotifier("ops", f"{rx.base}/services/T0QX81B2C/B0QX81B2D/{PATH_TOKEN}"))
    for secret in (PATH_TOKEN, "T0QX81B2C", "B0QX81B2D"):
        assert secret not in error
    assert error.startswith("HTTP 403: Cannot POST /…")


def test_a_configured_webhook_url_with_a_token_leaves_it_out_of_last_error(
    tmp_path: Path, store, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``url`` of a webhook notifier is a plain config value (not a secret key), yet its
    token stays out of the stored text all the same."""
    with EchoReceiver(404) as rx:
        (tmp_path / "ref.csv").write_text("age\n1\n2\n")
        (tmp_path / "config.toml").write_text(
            '[[models]]\nname = "churn"\nreference = "ref.csv"\nfeatures.numerical = ["age"]\n'
            '[[rules]]\nname = "drift"\nmetric = "drift_share"\nop = ">"\nthreshold = 0.3\nnotifiers = ["ops"]\n'
            f'[notifiers.ops]\ntype = "webhook"\nurl = "{_hook(rx.base)}"\n'
        )
        alerting = Alerting(load_config(tmp_path / "config.toml"), store, clock=clock)
        Feed(alerting.engine, store, clock).window({"drift_share": 0.6})
        assert alerting.worker.run_once() == 1
    [d] = db.list_deliveries(store, notifier="ops")
    _clean(d.last_error or "")
    assert d.last_error == "HTTP 404: Cannot POST /… (authorization: Basic ***)"
