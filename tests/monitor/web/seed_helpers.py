"""A real daemon (not consuming) whose pipeline was fed a drifting stream, with its HTTP API up.

The records go through the daemon's own pipeline (decode, windows, figures, samples,
rules, outbox) exactly as the consumer loop would pass them, the flushes commit, and
the outbox sends to a real Slack stand-in on 127.0.0.1, so windows, alerts,
deliveries, samples and dead letters are all real. Kafka is never contacted.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.demo.broker import free_port
from monitor.demo.sinks import SlackStandIn
from monitor.service.daemon import Daemon
from monitor.web.server import ApiServer
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.web.http_helpers import TOKEN, TOKEN_ENV, wait_serving

Rec = namedtuple("Rec", "topic partition offset timestamp value")
SLACK_TOKEN = "xoxb-seeded-dashboard-token"
SLACK_ENV = "DRIFTWARDEN_TEST_SEED_SLACK"
HOOK_ENV = "DRIFTWARDEN_TEST_SEED_HOOK"
HOOK_SECRET = "whsec_" + "c2VlZGVkLWhvb2stc2VjcmV0LWZvci10ZXN0cw=="

RULES = """
[[rules]]
name = "dataset-drift"
metric = "drift_share"
op = ">="
threshold = 0.5
severity = "critical"
notifiers = {dataset_notifiers}

[[rules]]
name = "age-drift"
metric = "drift_score"
column = "age"
op = ">="
threshold = 0.1
for = 2
severity = "warning"
notifiers = ["slack"]

[notifiers.slack]
type = "slack"
token_env = "{slack_env}"
channel = "#ml-alerts"
base_url = "{slack_url}"
backoff = "1s"
"""


@dataclass
class Seeded:
    daemon: Daemon
    server: ApiServer
    slack: SlackStandIn
    folder: Path

    @property
    def url(self) -> str:
        return self.server.url


def feed(daemon: Daemon, payloads: list[bytes], *, close_at_ms: int, batch: int = 400) -> None:
    """Pass ``payloads`` through the daemon's pipeline as partition 0, then close every window
    as the idle tick would at ``close_at_ms``."""
    now_ms = int(START.timestamp() * 1000) + 86_400_000
    recs = [Rec("predictions", 0, i, now_ms, p) for i, p in enumerate(payloads)]
    p = daemon.pipeline
    if 0 not in p.claims:
        p.adopt([0], generation=None)  # as Kafka's assignment would: the daemon claims it
    for i in range(0, len(recs), batch):
        p.process_records(recs[i:i + batch])
        p.flush()
        daemon.alerting.deliver_after_commit()
    for rt in p.models.values():
        p._collect(rt, rt.windows.close_idle(close_at_ms), START)
    p.flush()
    daemon.alerting.deliver_after_commit()


@contextlib.contextmanager
def seeded_daemon(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, windows: int = 8, per_window: int = 300, shift_from: int = 4,
    reports: str = "", daemon_extra: str = "", model_extra: str = "", bad: list[bytes] | None = None,
    transform: Callable[[list[bytes]], list[bytes]] | None = None, hook_url: str | None = None,
    storage: str = "",
) -> Iterator[Seeded]:
    """The daemon of ``folder`` fed ``windows`` one-minute windows (drifting from ``shift_from``),
    its HTTP API serving, alerts sent to a Slack stand-in; ``reports``: lines under [reports];
    ``model_extra``: lines in the model's table; ``transform``: rewrites the stream first;
    ``hook_url``: the dataset-drift rule also notifies a webhook there (secret ``HOOK_SECRET``);
    ``storage``: a ``[storage]`` table (the shared PostgreSQL of a ``pg_target``)."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(SLACK_ENV, SLACK_TOKEN)
    slack = SlackStandIn(token=SLACK_TOKEN).start()
    port = free_port()
    notifiers = '["slack", "hook"]' if hook_url else '["slack"]'
    extra = RULES.format(slack_env=SLACK_ENV, slack_url=slack.url, dataset_notifiers=notifiers)
    if hook_url:
        monkeypatch.setenv(HOOK_ENV, HOOK_SECRET)
        extra += f'\n[notifiers.hook]\ntype = "webhook"\nurl = "{hook_url}"\nsecret_env = "{HOOK_ENV}"\nbackoff = "1s"\n'
    extra += f"\n[reports]\n{reports}\n" if reports else ""
    extra += storage
    path = write_config(
        folder, bootstrap="127.0.0.1:9", topic="predictions", http_port=port, extra=extra,
        daemon_extra=f'api_token_env = "{TOKEN_ENV}"\npublic_url = "http://127.0.0.1:{port}"\n{daemon_extra}',
    )
    if model_extra:
        text = path.read_text()
        path.write_text(text.replace('reference = "reference.csv"\n', f'reference = "reference.csv"\n{model_extra}\n'))
    daemon = Daemon(load_config(path), http=False)
    server = ApiServer(daemon)
    try:
        end_ms = int(START.timestamp() * 1000) + (windows + 1) * 60_000
        payloads = stream(windows, per_window, shift_from)
        if transform is not None:
            payloads = transform(payloads)
        feed(daemon, payloads + list(bad or []), close_at_ms=end_ms)
        # every notification the stream caused is sent before the test looks (lanes send
        # in the background: under load the last one may still be on its way)
        from storage.alerts import delivery_counts

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            not slack.messages
            or any(status == "pending" for (_n, status) in delivery_counts(daemon.store))
        ):
            daemon.alerting.deliver_due()
            time.sleep(0.1)
        daemon.alerting.worker.wait_idle(10)
        server.start()
        assert wait_serving(server.port), "the HTTP server did not answer"
        yield Seeded(daemon, server, slack, folder)
    finally:
        server.stop()
        daemon.alerting.drain(2)
        daemon.close()
        slack.stop()


LINK = re.compile(r"<([^|>]+)\|HTML report>")


def report_links(slack: SlackStandIn) -> list[str]:
    """The report URLs of every Slack message, as Slack would open them."""
    out = []
    for m in slack.messages:
        for b in m.blocks:
            text = (b.get("text") or {}).get("text", "") if isinstance(b, dict) else ""
            out += [u.replace("&amp;", "&") for u in LINK.findall(text)]
    return out
