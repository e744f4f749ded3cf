"""Signed webhooks: Standard Webhooks headers, bodies, the retraining loop's cooldown."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

from alerts.notifiers.webhook import WebhookNotifier, check_secret, new_secret
from alerts.outbox import DeliveryWorker
from alerts.payloads import WindowContext
from alerts.rules import Rule
from monitor.demo.sinks import WebhookSink
from storage import alerts as db
from tests.alerts.conftest import Feed, make_engine, rng
from tests.alerts.test_outbox import drain

CALLBACK = "http://127.0.0.1:9308/api/v1/models/churn/references"
CONTEXT = WindowContext(
    data={
        "topic": "predictions",
        "from": "2026-11-23T14:00:00.000Z",
        "to": "2026-11-23T14:15:00.000Z",
    },
    links={"report": "http://127.0.0.1:9308/r", "api": "http://127.0.0.1:9308/api/v1/alerts"},
    callback=CALLBACK,
)
DRIFTED = [("age", "wasserstein", 0.31), ("plan", "jensenshannon", 0.2)]
RETRAIN_RULE = Rule(
    "feature-drift", "drift_share", ">", 0.3, severity="critical", notifiers=("retrain",)
)


def retrain_setup(store, clock, sink, secret, cooldown=timedelta(hours=6)):
    n = WebhookNotifier("retrain", sink.url, secret, kind="retrain", cooldown=cooldown)
    f = Feed(make_engine(store, clock, (RETRAIN_RULE,), {"retrain": n}), store, clock)
    f.context = CONTEXT
    return f, n


def test_retrain_body_is_design_payload_and_signature_verifies(store, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        f, n = retrain_setup(store, clock, sink, secret)
        f.window({"drift_share": 0.6}, drifted=DRIFTED, rows=5000)
        DeliveryWorker(store, {"retrain": n}, clock, rng()).run_once()
        [req] = sink.accepted()
        body = Webhook(secret).verify(req.body, req.headers)
        [d] = db.list_deliveries(store)
        assert req.method == "POST" and req.header("content-type") == "application/json"
        assert req.header("webhook-id") == d.id
        assert req.header("webhook-signature").startswith("v1,")
        assert body == {
            "type": "retrain.requested",
            "id": d.id,
            "model": "churn",
            "version": "v12",
            "alert": {
                "rule": "feature-drift",
                "metric": "drift_share",
                "value": 0.6,
                "threshold": 0.3,
                "severity": "critical",
            },
            "window": {
                "start": "2026-11-23T14:00:00.000Z",
                "end": "2026-11-23T14:15:00.000Z",
                "rows": 5000,
            },
            "drifted_columns": [
                {"column": "age", "test": "wasserstein", "score": 0.31},
                {"column": "plan", "test": "jensenshannon", "score": 0.2},
            ],
            "data": dict(CONTEXT.data),
            "callback": CALLBACK,
        }


def test_two_drifting_windows_inside_cooldown_make_one_retraining_call(store_target, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        store = store_target.open()
        f, n = retrain_setup(store, clock, sink, secret)
        f.window({"drift_share": 0.6})
        f.window({"drift_share": 0.1})  # resolves
        t = f.window({"drift_share": 0.7})  # fires again 30 min later
        assert t[0].to_state == "firing" and t[0].notifiers == ()
        # a restart keeps the cooldown (it is derived from the outbox)
        store2 = store_target.open()
        f2, n2 = retrain_setup(store2, clock, sink, secret)
        f2.n = f.n
        f2.window({"drift_share": 0.1})
        assert f2.window({"drift_share": 0.8})[0].notifiers == ()
        worker = DeliveryWorker(store2, {"retrain": n2}, clock, rng())
        drain(worker, clock, clock.now + timedelta(minutes=1))
        assert len(sink.unique()) == 1
        assert [e["type"] for e in sink.events()] == ["retrain.requested"]
        # after the cooldown the next firing asks again
        clock.advance(hours=6)
        f2.n += 24
        f2.window({"drift_share": 0.1})
        assert f2.window({"drift_share": 0.9})[0].notifiers == ("retrain",)
        drain(worker, clock, clock.now + timedelta(minutes=1))
        assert [e["alert"]["value"] for e in sink.events()] == [0.6, 0.9]
        store.close()
        store2.close()


def test_one_retraining_call_per_model_even_with_several_rules(store, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        n = WebhookNotifier(
            "retrain", sink.url, secret, kind="retrain", cooldown=timedelta(hours=1)
        )
        rules = (
            Rule("share", "drift_share", ">", 0.3, notifiers=("retrain",)),
            Rule(
                "age",
                "wasserstein",
                ">",
                0.1,
                column="age",
                severity="critical",
                notifiers=("retrain",),
            ),
        )
        f = Feed(make_engine(store, clock, rules, {"retrain": n}), store, clock)
        f.window({"drift_share": 0.6}, columns={"age": (0.3, True)})
        [d] = db.list_deliveries(store)
        assert d.payload["alert"]["rule"] == "age"  # the critical one speaks for the model


def test_alert_webhook_bodies_firing_and_resolved(store, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        n = WebhookNotifier("hook", sink.url, secret)
        f = Feed(
            make_engine(store, clock, (Rule("drift", "drift_share", ">", 0.3),), {"hook": n}),
            store,
            clock,
        )
        f.context = CONTEXT
        f.window({"drift_share": 0.6}, drifted=DRIFTED)
        f.window({"drift_share": 0.2})
        drain(DeliveryWorker(store, {"hook": n}, clock, rng()), clock, clock.now)
        firing, resolved = sink.events()
        assert all(r.verified for r in sink.accepted())
        assert (firing["type"], resolved["type"]) == ("alert.firing", "alert.resolved")
        assert firing["reminder"] is False
        assert firing["group"] == {"model": "churn", "alertname": "drift"}
        [a] = firing["alerts"]
        assert {
            k: a[k]
            for k in ("rule", "model", "version", "metric", "op", "value", "threshold", "state")
        } == {
            "rule": "drift",
            "model": "churn",
            "version": "v12",
            "metric": "drift_share",
            "op": ">",
            "value": 0.6,
            "threshold": 0.3,
            "state": "firing",
        }
        assert firing["drifted_columns"][0] == {
            "column": "age",
            "test": "wasserstein",
            "score": 0.31,
        }
        assert firing["window"]["rows"] == 1000 and firing["links"] == dict(CONTEXT.links)
        assert (
            resolved["alerts"][0]["state"] == "resolved" and resolved["alerts"][0]["value"] == 0.2
        )


def test_webhook_id_is_stable_across_retries_and_each_attempt_is_signed(store, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        sink.script(503, (429, {"Retry-After": "120"}))
        n = WebhookNotifier("hook", sink.url, secret)
        Feed(
            make_engine(store, clock, (Rule("d", "drift_share", ">", 0.3),), {"hook": n}),
            store,
            clock,
        ).window({"drift_share": 0.6})
        worker = DeliveryWorker(store, {"hook": n}, clock, rng(), base_delay=1)
        worker.run_once()
        clock.set(worker.next_due())
        t = clock.now
        worker.run_once()
        assert worker.next_due() >= t + timedelta(seconds=120)  # Retry-After honoured
        drain(worker, clock, clock.now + timedelta(minutes=5))
        reqs = sink.requests
        assert [r.status for r in reqs] == [503, 429, 200]
        assert len({r.header("webhook-id") for r in reqs}) == 1
        assert len({r.body for r in reqs}) == 1  # the same bytes every time
        assert all(r.verified for r in reqs)


def test_no_secret_sends_no_signature(store, clock):
    with WebhookSink() as sink:
        n = WebhookNotifier("hook", sink.url)
        Feed(
            make_engine(store, clock, (Rule("d", "drift_share", ">", 0.3),), {"hook": n}),
            store,
            clock,
        ).window({"drift_share": 0.6})
        DeliveryWorker(store, {"hook": n}, clock, rng()).run_once()
        [req] = sink.accepted()
        assert req.header("webhook-signature") == "" and req.header("webhook-id").startswith("msg_")
        assert json.loads(req.body)["type"] == "alert.firing"


def test_wrong_secret_fails_verification_at_the_receiver(store, clock):
    with WebhookSink(secret=new_secret(), reject_invalid=True) as sink:
        n = WebhookNotifier("hook", sink.url, new_secret())
        Feed(
            make_engine(store, clock, (Rule("d", "drift_share", ">", 0.3),), {"hook": n}),
            store,
            clock,
        ).window({"drift_share": 0.6})
        DeliveryWorker(store, {"hook": n}, clock, rng()).run_once()
        [req] = sink.requests
        assert req.status == 401 and req.verified is False
        assert db.list_deliveries(store)[0].status == "dead"  # 401 is permanent


def test_secret_and_options_are_validated():
    assert (
        check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
    with pytest.raises(ValueError, match="base64"):
        check_secret("whsec_not base64!")
    with pytest.raises(ValueError, match="too short"):
        check_secret("whsec_c2hvcnQ=")
    with pytest.raises(ValueError, match="kind must be"):
        WebhookNotifier("x", "http://h", kind="page")
    with pytest.raises(ValueError, match="url must be"):
        WebhookNotifier("x", "ftp://h")
    assert new_secret() != new_secret() and check_secret(new_secret())


@pytest.mark.parametrize("charset", ["undefined", "idna", "punycode", "no-such-charset"])
def test_an_answer_in_a_charset_that_refuses_decoding_is_still_read(charset: str) -> None:
    """A receiver answering 200 with ``charset=undefined`` (or idna, punycode) made reading
    the answer raise UnicodeError: the delivery was retried though it had been sent, and
    ended dead. The status decides; the text is read as UTF-8 when the charset cannot."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from alerts.notifiers import http

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", f"text/plain; charset={charset}")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with http.client(5.0) as client:
            answer = http.request(client, "POST", f"http://127.0.0.1:{server.server_address[1]}/", content=b"{}",
                                  headers={}, timeout=5.0, max_bytes=4096)
        text = answer.text()  # raised UnicodeError for undefined, idna
        assert (answer.status, answer.charset) == (200, charset)
        assert text == ("" if charset == "punycode" else "ok")  # punycode reads b"ok" as nothing
    finally:
        server.shutdown()
