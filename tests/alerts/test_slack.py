"""Slack: Block Kit content and limits, threads and updates, incoming webhooks, errors."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.notifiers.slack import SlackNotifier, SlackWebhookNotifier
from alerts.notifiers.slack_blocks import (
    MAX_BLOCKS,
    MAX_FIELD_TEXT,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    render_blocks,
    render_text,
)
from alerts.outbox import DeliveryWorker
from alerts.payloads import WindowContext
from alerts.rules import Rule
from monitor.demo.sinks import SlackStandIn
from storage import alerts as db
from storage.records import MetricRow, WindowKey, WindowRecord, iso
from tests.alerts.conftest import Feed, make_engine, rng
from tests.alerts.test_outbox import drain

COLS = Rule("col-drift", "drifted", "==", 1, column="*", severity="critical")
CONTEXT = WindowContext(
    links={"report": "http://127.0.0.1:9308/report", "api": "http://127.0.0.1:9308/api/v1/alerts"}
)


def setup(store, clock, slack, rules=(COLS,)):
    n = SlackNotifier("slack", "xoxb-test", "C0ML", base_url=slack.url)
    f = Feed(make_engine(store, clock, rules, {"slack": n}), store, clock)
    f.context = CONTEXT
    return f, n, DeliveryWorker(store, {"slack": n}, clock, rng())


def texts(blocks) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [f["text"] for f in b.get("fields", [])]
        out += [e["text"] for e in b.get("elements", [])]
    return "\n".join(out)


def check_limits(blocks) -> None:
    assert len(blocks) <= MAX_BLOCKS
    for b in blocks:
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= MAX_HEADER_TEXT
        if b["type"] == "section":
            if "text" in b:
                assert 0 < len(b["text"]["text"]) <= MAX_SECTION_TEXT
            assert len(b.get("fields", [])) <= 10
            assert all(len(f["text"]) <= MAX_FIELD_TEXT for f in b.get("fields", []))


def test_firing_message_content(store, clock):
    with SlackStandIn(token="xoxb-test") as slack:
        f, n, worker = setup(store, clock, slack)
        f.window(
            columns={"age": (0.31, True), "plan": (0.2, True)},
            drifted=[("age", "wasserstein", 0.31), ("plan", "jensenshannon", 0.2)],
        )
        worker.run_once()
        [msg] = slack.messages
        assert msg.channel == "C0ML"
        assert msg.text == (
            "CRITICAL · churn · col-drift · 2 alerts\n"
            "- col-drift [age]: drift detected\n"
            "- col-drift [plan]: drift detected"
        )
        body = texts(msg.blocks)
        assert msg.blocks[0]["type"] == "header"
        assert (
            msg.blocks[0]["text"]["text"] == ":red_circle: CRITICAL · churn · col-drift · 2 alerts"
        )
        for expected in (
            "*Model*\n`churn`",
            "*Version*\n`v12`",
            "*Severity*\ncritical",
            "2026-11-23T14:00:00.000Z → 2026-11-23T14:15:00.000Z",
            "1000 rows",
            "*col-drift* (column `age`): drift detected",
            "• `age` — wasserstein 0.31",
            "• `plan` — jensenshannon 0.2",
            "<http://127.0.0.1:9308/report|HTML report>",
            "<http://127.0.0.1:9308/api/v1/alerts|HTTP API>",
        ):
            assert expected in body, expected
        check_limits(msg.blocks)


def test_drifted_columns_name_their_statistic_a_p_value_is_no_distance(store, clock):
    # "`amount` — ks 1.14e-19" read like a tiny distance beside "`income` — wasserstein 0.31"
    with SlackStandIn(token="xoxb-test") as slack:
        f, n, worker = setup(store, clock, slack)
        f.window(
            columns={"amount": (1.14e-19, True), "income": (0.3123, True)},
            drifted=[("amount", "ks", 1.14e-19), ("income", "wasserstein", 0.3123)],
        )
        worker.run_once()
        [msg] = slack.messages
        body = texts(msg.blocks)
        assert "• `amount` — ks p=1.1e-19\n• `income` — wasserstein 0.312" in body, body
        # the stored payload (what a webhook gets) keeps its fields and numbers as they are
        [d] = db.list_deliveries(store, kind="firing")
        assert d.payload["drifted_columns"] == [
            {"column": "amount", "test": "ks", "score": 1.14e-19},
            {"column": "income", "test": "wasserstein", "score": 0.3123},
        ]


def test_value_vs_threshold_line(store, clock):
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack, (Rule("acc", "accuracy", "<", 0.8),))
        f.window({"accuracy": 0.71234})
        worker.run_once()
        assert "*acc*: `accuracy` = *0.7123* &lt; 0.8" in texts(slack.messages[0].blocks)


def test_resolution_in_thread_and_original_updated(store, clock):
    with SlackStandIn(token="xoxb-test") as slack:
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True), "plan": (0.3, True)})
        worker.run_once()
        f.window(columns={"age": (0.0, False), "plan": (0.3, True)})
        worker.run_once()
        original, reply = slack.messages
        assert reply.thread_ts == original.ts
        assert reply.text.startswith("RESOLVED (critical) · churn · col-drift")
        assert original.updates == 1
        body = texts(original.blocks)
        assert ":white_check_mark: ~*col-drift* (column `age`): drift detected~ resolved" in body
        assert "*col-drift* (column `plan`): drift detected" in body
        assert original.blocks[0]["text"]["text"].startswith(":red_circle: CRITICAL")
        # the last one resolves: the header of the original turns resolved
        f.window(columns={"age": (0.0, False), "plan": (0.0, False)})
        worker.run_once()
        original = slack.messages[0]
        assert original.updates == 2
        assert original.blocks[0]["text"]["text"].startswith(
            ":white_check_mark: RESOLVED (critical)"
        )
        assert [m.thread_ts for m in slack.messages[1:]] == [original.ts, original.ts]
        firing = db.list_deliveries(store, kind="firing")[0]
        assert sorted(firing.response["resolved_ids"]) == sorted(
            COLS.instance_id("churn", c, "", "v12") for c in ("age", "plan")
        )


def test_reminder_is_broadcast_in_the_thread(store, clock):
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        f.engine.on_tick(clock.now + timedelta(hours=4))
        clock.advance(hours=4)
        worker.run_once()
        original, reminder = slack.messages
        assert reminder.thread_ts == original.ts
        assert reminder.text.startswith("STILL FIRING (critical)")
        assert slack.calls("chat.postMessage")[1].data["reply_broadcast"] is True


def test_update_failure_retries_without_posting_the_reply_twice(store, clock):
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        f.window(columns={"age": (0.0, False)})
        slack.script(
            (200, {}, {"ok": True, "channel": "C0ML", "ts": "1700000099.000099"}), (503, {})
        )
        worker.run_once()  # reply "posted" (scripted answer), chat.update gets a 503
        [d] = db.list_deliveries(store, kind="resolved")
        assert d.status == "pending" and d.response == {
            "channel": "C0ML",
            "ts": "1700000099.000099",
        }
        drain(worker, clock, clock.now + timedelta(minutes=5))
        methods = [r.extra["method"] for r in slack.requests]
        assert methods == ["chat.postMessage", "chat.postMessage", "chat.update", "chat.update"]
        assert db.get_delivery(store, d.id).status == "sent"
        assert slack.messages[0].updates == 1


def test_permanent_slack_error_gives_up(store, clock):
    with SlackStandIn(token="right") as slack:
        n = SlackNotifier("slack", "wrong", "C0ML", base_url=slack.url)
        f = Feed(make_engine(store, clock, (COLS,), {"slack": n}), store, clock)
        f.window(columns={"age": (0.3, True)})
        DeliveryWorker(store, {"slack": n}, clock, rng()).run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.last_error) == ("dead", "slack error invalid_auth")


def test_transient_slack_error_code_retries(store, clock):
    with SlackStandIn() as slack:
        slack.script((200, {}, {"ok": False, "error": "internal_error"}))
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.last_error) == ("pending", "slack error internal_error")


def test_unreachable_slack_is_retried(store, clock):
    slack = SlackStandIn().start()
    url = slack.url
    slack.stop()
    n = SlackNotifier("slack", "xoxb", "C0ML", base_url=url, timeout=2)
    f = Feed(make_engine(store, clock, (COLS,), {"slack": n}), store, clock)
    f.window(columns={"age": (0.3, True)})
    DeliveryWorker(store, {"slack": n}, clock, rng()).run_once()
    [d] = db.list_deliveries(store)
    assert d.status == "pending" and d.attempts == 1 and d.last_error


def test_incoming_webhook_mode(store, clock):
    with SlackStandIn() as slack:
        n = SlackNotifier.from_webhook_url("hook", slack.webhook_url)
        assert isinstance(n, SlackWebhookNotifier)
        f = Feed(make_engine(store, clock, (COLS,), {"hook": n}), store, clock)
        f.window(columns={"age": (0.3, True)})
        slack.script((429, {"Retry-After": "7"}))
        worker = DeliveryWorker(store, {"hook": n}, clock, rng(), base_delay=1)
        t = clock.now
        worker.run_once()
        assert worker.next_due() >= t + timedelta(seconds=7)
        f.window(columns={"age": (0.0, False)})
        drain(worker, clock, clock.now + timedelta(minutes=1))
        firing, resolved = slack.messages
        assert firing.text.startswith("CRITICAL · churn · col-drift")
        assert resolved.text.startswith("RESOLVED (critical)") and resolved.thread_ts is None
        assert [d.status for d in db.list_deliveries(store)] == ["sent", "sent"]


def test_block_limits_with_hundreds_of_alerts(store, clock):
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        cols = {f"feature_{i:03d}_" + "x" * 40: (0.5, True) for i in range(400)}
        drifted = [(c, "wasserstein", 0.5) for c in cols]
        f.window(columns=cols, drifted=drifted)
        worker.run_once()
        [msg] = slack.messages
        check_limits(msg.blocks)
        assert msg.blocks[-1]["type"] == "context"
        assert "…and " in texts(msg.blocks)
        assert len(msg.text) <= 3000
        [d] = db.list_deliveries(store)
        assert len(d.alert_ids) == 400 and d.status == "sent"


alert_st = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=10),
        "rule": st.text(max_size=300),
        "model": st.text(max_size=200),
        "column": st.text(max_size=3000),
        "segment": st.text(max_size=100),
        "metric": st.sampled_from(["drift_share", "drifted", "no_data", "x" * 500]),
        "op": st.sampled_from([">", "<", "=="]),
        "value": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "threshold": st.floats(allow_nan=False, allow_infinity=False),
        "severity": st.sampled_from(["warning", "critical"]),
        "version": st.text(max_size=2100),
        "labels": st.just({}),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    alerts=st.lists(alert_st, min_size=1, max_size=120),
    kind=st.sampled_from(["firing", "resolved", "reminder"]),
    ndrift=st.integers(0, 300),
    link=st.text(max_size=4000),
)
def test_rendering_respects_slack_limits(alerts, kind, ndrift, link):
    payload = {
        "id": "msg_x",
        "group": {"model": "m"},
        "alerts": alerts,
        "window": {"start": "a" * 3000, "end": "b", "rows": 3},
        "drifted_columns": [{"column": "c" * 80, "test": "ks", "score": 0.1}] * ndrift,
        "links": {"report": link},
    }
    blocks = render_blocks(payload, kind, resolved_ids={alerts[0]["id"]})
    check_limits(blocks)
    assert len(render_text(payload, kind)) <= 3000


@pytest.mark.parametrize("body", ["[1, 2]", '"ok"', "null", "1"])
def test_slack_answer_that_is_json_but_not_an_object_is_retried(store, clock, body):
    """slack-sdk failed on such an answer with an AttributeError, logged as a notifier
    bug with its traceback (``null``: dead at once as "slack error unknown")."""
    with SlackStandIn() as slack:
        slack.script((200, {"Content-Type": "application/json"}, body))
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts) == ("pending", 1)
        assert d.last_error == "answer is JSON but not an object (HTTP 200); not Slack's"
        drain(worker, clock, clock.now + timedelta(minutes=5))
        assert [(x.status, x.attempts) for x in db.list_deliveries(store)] == [("sent", 2)]


#: an answer Python's JSON parser cannot read: nested too deep (it raises RecursionError)
TOO_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("body", [TOO_DEEP, '{"a":' * 100_000 + "1" + "}" * 100_000], ids=["array", "object"])
def test_slack_answer_nested_too_deep_is_retried_as_not_slacks(store, clock, caplog, body):
    """slack-sdk raised RecursionError reading it: the outbox logged a notifier bug with a
    traceback at every attempt, and the error stored was Python's. Now it is one of the
    answers that are not Slack's (a proxy, a wrong base_url): retried with a reason."""
    caplog.set_level(logging.WARNING)
    with SlackStandIn() as slack:
        slack.script((200, {"Content-Type": "application/json"}, body))
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.response) == ("pending", 1, None)
        assert d.last_error == "answer is nested too deep to read (HTTP 200); not Slack's"
        drain(worker, clock, clock.now + timedelta(minutes=5))
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.last_error) == ("sent", 2, None)
        assert len(slack.calls("chat.postMessage")) == 2 and len(slack.messages) == 1
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize(("status", "outcome"), [(503, "pending"), (404, "dead")])
def test_slack_error_status_with_an_answer_nested_too_deep_is_judged_by_its_status(store, clock, status, outcome):
    """slack-sdk parsed the body of an error answer too, and raised RecursionError."""
    with SlackStandIn() as slack:
        slack.script((status, {"Content-Type": "application/json"}, TOO_DEEP))
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.last_error) == (outcome, 1, f"HTTP {status}")


@pytest.mark.parametrize("error", [["ratelimited"], {"code": 1}])
def test_slack_error_that_is_not_a_string_gives_up(store, clock, error):
    """``{"ok": false, "error": [...]}`` raised TypeError (unhashable) in the notifier:
    retried as a notifier bug, with a traceback per attempt."""
    with SlackStandIn() as slack:
        slack.script((200, {}, {"ok": False, "error": error}))
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.last_error) == ("dead", 1, "slack error unknown")


MISSING = Rule("charges-missing", "missing_share", ">", 0.1, column="monthly_charges", for_windows=1)
SILENT = Rule("silent", "no_data", severity="critical", model="churn", no_data_for=timedelta(minutes=30))


def _missing_window(f: Feed, share: float) -> None:
    """The next window of ``f`` with ``monthly_charges``' missing share, judged with the
    reference's own share (0.02) in its context, as the pipeline passes it."""
    s = f.start + f.n * f.size
    f.n += 1
    f.clock.set(s + f.size)
    key = WindowKey("churn", "v12", "", iso(s), iso(s + f.size))
    ctx = WindowContext(reference_metrics={("monthly_charges", "missing_share"): 0.02}, links=CONTEXT.links)
    with f.store.transaction():
        f.engine.on_window(WindowRecord(key, 1000, "ok", s + f.size),
                           [MetricRow("monthly_charges", "missing_share", share)], context=ctx)


def test_a_message_says_since_when_and_the_reference_baseline(store, clock):
    """On call: 'since when' and 'how bad against the baseline' were in no message: the
    alert's fired_at and the reference's own figure are shown (and sent to webhooks)."""
    with SlackStandIn(token="xoxb-test") as slack:
        f, n, worker = setup(store, clock, slack, rules=(MISSING,))
        _missing_window(f, 0.3)
        worker.run_once()
        [msg] = slack.messages
        body = texts(msg.blocks)
        assert "*charges-missing* (column `monthly_charges`): `missing_share` = *0.3* &gt; 0.1 · reference 0.02" in body
        assert "*Firing since*\n2026-11-23T14:15:00.000Z" in body
        assert msg.text.endswith("missing_share = 0.3 &gt; 0.1 · reference 0.02")
        payload = db.list_deliveries(store, kind="firing")[0].payload
        assert payload["alerts"][0]["reference"] == 0.02
        _missing_window(f, 0.0)
        worker.run_once()
        reply = slack.messages[1]
        body = texts(reply.blocks)
        assert "`missing_share` back to *0* (fires when &gt; 0.1) · reference 0.02" in body
        assert "*Fired*\n2026-11-23T14:15:00.000Z\nresolved 2026-11-23T14:30:00.000Z (after 15m 00s)" in body


def test_a_no_data_message_says_when_data_last_came_not_a_window(store, clock):
    """A no-data alert's 'window' is the silence: it read as *Window* last data → now."""
    with SlackStandIn(token="xoxb-test") as slack:
        f, n, worker = setup(store, clock, slack, rules=(SILENT,))
        start = clock.now
        f.engine.observe_model_activity("churn", start)
        f.engine.on_tick(start + timedelta(minutes=31, seconds=4))
        worker.run_once()
        [msg] = slack.messages
        body = texts(msg.blocks)
        assert "*Window*" not in body
        assert f"*Last data*\n{start.strftime('%Y-%m-%dT%H:%M:%S.000Z')}" in body
        assert "no data for *31m 04s* (limit 30m 00s)" in body
        f.engine.observe_model_activity("churn", start + timedelta(minutes=40))
        f.engine.on_tick(start + timedelta(minutes=41))
        worker.run_once()
        body = texts(slack.messages[1].blocks)
        assert "*Window*" not in body and "*Last data*" not in body
        assert "(after 9m 56s)" in body, body
