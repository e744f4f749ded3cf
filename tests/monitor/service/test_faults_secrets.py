"""Known secret strings (Slack token, webhook signing secret, SASL password, API token) never
appear in the daemon's logs at debug level, in error messages, or in ``driftwarden check``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker
from monitor.demo.sinks import SlackStandIn, WebhookSink
from tests.monitor.daemon_helpers import count_windows, produce, stream, wait_for
from tests.monitor.fault_helpers import fault_config, start_daemon, terminate, wait_ready

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SLACK = "xoxb-1111-2222-SEKRIT-slack-token-do-not-print"
HOOK = "whsec_" + "U0VLUklULXdlYmhvb2stc2lnbmluZy1zZWNyZXQ="
SASL = "SEKRIT-sasl-password-4711"
API = "SEKRIT-api-token-0815"
SECRETS = (SLACK, HOOK, SASL, API, "SEKRIT")
ENV = {
    "DW_T_SLACK": SLACK,
    "DW_T_HOOK": HOOK,
    "DW_T_SASL": SASL,
    "DW_T_API": API,
}

RULES = """
[[rules]]
name = "dataset-drift"
metric = "drift_share"
op = ">="
threshold = 0.5
severity = "critical"
notifiers = ["slack", "retrain"]

[notifiers.slack]
type = "slack"
token_env = "DW_T_SLACK"
channel = "#ml-alerts"
base_url = "{slack}"
backoff = "1s"

[notifiers.retrain]
type = "webhook"
kind = "retrain"
url = "{sink}/retrain"
secret_env = "DW_T_HOOK"
backoff = "1s"
"""


def _config(
    folder: Path, broker: EmbeddedBroker, topic: str, slack: str, sink: str, *, sasl: bool = False
) -> Path:
    cfg = fault_config(
        folder,
        bootstrap=broker.bootstrap,
        topic=topic,
        extra=RULES.format(slack=slack, sink=sink),
        daemon_extra='api_token_env = "DW_T_API"',
    )
    text = cfg.read_text().replace('log_level = "info"', 'log_level = "debug"')
    if sasl:
        text = text.replace(
            "[kafka]\n",
            '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
            'sasl_username = "monitor"\nsasl_password_env = "DW_T_SASL"\n',
        )
    cfg.write_text(text)
    return cfg


def _check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli.app", "check", "-c", str(cfg)],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_clean(text: str, where: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s[:8]}… appears in {where}"


def test_secrets_never_in_logs_errors_or_check(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    with SlackStandIn(token=SLACK) as slack, WebhookSink(secret=HOOK) as sink:
        sink_url = sink.url.rstrip("/")
        cfg = _config(tmp_path / "ok", broker, topic, slack.url, sink_url)

        # check: everything reachable -> exit 0, one line per check, no secret
        res = _check(cfg)
        out = res.stdout + res.stderr
        _assert_clean(out, "check output")
        assert res.returncode == 0, out
        lines = res.stdout.strip().splitlines()
        # config (with references), state dir, kafka, slack, webhook (and the store on PostgreSQL)
        assert [ln[0] for ln in lines] == ["✓"] * 7, out  # PostgreSQL's storage line or SQLite's database line
        assert any("auth.test ok" in ln for ln in lines)
        assert slack.calls("auth.test"), "check did not call auth.test"
        assert sink.accepted() == [], "check must not POST to webhooks"

        # the daemon at debug level, notifying Slack and the webhook with the secrets
        produce(broker.bootstrap, topic, stream(6, 200, 2))
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, env=ENV, log=log)
        try:
            assert wait_ready(cfg)
            assert wait_for(
                lambda: count_windows(cfg.parent / "state" / "driftwarden.db") >= 6, timeout=60
            )
            assert wait_for(
                lambda: len(sink.accepted()) >= 1 and len(slack.calls("chat.postMessage")) >= 1,
                timeout=30,
            )
        finally:
            assert terminate(proc) == 0
        text = log.read_text()
        assert "DEBUG" in text
        _assert_clean(text, "daemon log")

        # wrong Slack token, unreachable webhook, SASL refused: each fails with a reason, no secret
        with SlackStandIn(token="xoxb-another-token") as other_slack:
            bad = _config(
                tmp_path / "bad", broker, topic, other_slack.url, "http://127.0.0.1:9", sasl=True
            )
            t0 = time.monotonic()
            res = _check(bad)
            took = time.monotonic() - t0
        out = res.stdout + res.stderr
        _assert_clean(out, "failing check output")
        assert res.returncode == 1, out
        lines = res.stdout.strip().splitlines()
        marks = {ln.split(":", 1)[0][2:]: ln[0] for ln in lines}
        assert marks.get("kafka") == "✗", out
        assert marks.get("slack slack") == "✗" and "invalid_auth" in out, out
        assert marks.get("webhook retrain") == "✗", out
        print(f"\nfailing check took {took:.1f}s:\n{res.stdout}")
        assert took < 45, took

        # the daemon itself with the refused SASL config: errors logged, no secret
        log2 = tmp_path / "daemon-sasl.log"
        proc = start_daemon(bad, env=ENV, log=log2)
        time.sleep(6)
        terminate(proc)
        _assert_clean(log2.read_text(), "daemon log (SASL failing)")
