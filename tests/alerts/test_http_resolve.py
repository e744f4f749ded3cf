"""Host name lookups are bounded by the request's timeout, and TLS still checks the name.

Socket timeouts do not bound ``getaddrinfo``: a receiver whose name the resolver never
answers held its lane (and the daemon's shutdown wait) for as long as it hung. The system
resolver function is substituted at the socket level (``socket.getaddrinfo``, not our code)
to make names hang or point at 127.0.0.1; the receivers are real servers on 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alerts.notifiers import http
from alerts.notifiers.slack import SlackNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.outbox import DeliveryWorker
from alerts.rules import Rule
from monitor.demo.sinks import SlackStandIn, WebhookSink
from storage import alerts as db
from tests.alerts.conftest import Feed, make_engine, rng

HIGH = {"drift_share": 0.6}


def rule(*names: str) -> Rule:
    return Rule("drift", "drift_share", ">", 0.3, notifiers=names)


class Resolver:
    """``socket.getaddrinfo`` as the tests want it: names in ``hanging`` never answer
    (until the test ends), names in ``local`` are 127.0.0.1, the rest as the system says."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.hanging: set[str] = set()
        self.local: set[str] = set()
        self.asked: list[str] = []
        self.released = threading.Event()

    def __call__(self, host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        self.asked.append(name)
        if name in self.hanging:
            self.released.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self.real("127.0.0.1" if name in self.local else host, port, *args, **kw)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    r = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", r)
    yield r
    r.released.set()  # the lookups left hanging end


def test_a_hanging_lookup_is_cut_the_others_go_on_and_shutdown_is_not_held(store, clock, resolver):
    resolver.hanging.add("stuck.test")
    with WebhookSink() as sink, SlackStandIn() as slack:
        notifiers = {
            "stuck": WebhookNotifier("stuck", f"http://stuck.test:{sink.port}/hook", timeout=0.5),
            "stuck-slack": SlackNotifier("stuck-slack", "xoxb", "C0ML", base_url="http://stuck.test/api/", timeout=0.5),
            "ok": WebhookNotifier("ok", sink.url, timeout=0.5),
            "slack": SlackNotifier("slack", "xoxb", "C0ML", base_url=slack.url, timeout=0.5),
        }
        Feed(make_engine(store, clock, (rule(*notifiers),), notifiers), store, clock).window(HIGH)
        worker = DeliveryWorker(store, notifiers, clock, rng(), base_delay=1)
        lanes = worker.dispatch()
        _, running = wait(lanes.values(), timeout=10)  # (the old code: never, while the resolver hangs)
        assert not running
        assert worker.close(timeout=1) is True
        for name in ("stuck", "stuck-slack"):
            [d] = db.list_deliveries(store, notifier=name)
            assert (d.status, d.attempts, d.last_error) == ("pending", 1, "host name 'stuck.test' not resolved within 0.5 s")
        assert [d.status for d in db.list_deliveries(store, notifier="ok")] == ["sent"]
        assert [d.status for d in db.list_deliveries(store, notifier="slack")] == ["sent"]
        assert len(sink.accepted()) == 1 and len(slack.messages) == 1


def test_a_lookup_still_hanging_is_waited_for_again_not_repeated_and_their_number_is_bounded(resolver):
    resolver.hanging |= {"a.test", "b.test"}
    lookups = http._Lookups(limit=1)
    for _ in range(2):
        with pytest.raises(http.NotResolved, match=r"^host name 'a.test' not resolved within 0.1 s$"):
            lookups.resolve("a.test", 443, 0.1)
    with pytest.raises(http.NotResolved, match=r"^host name 'b.test' not resolved: 1 host name lookups are still"):
        lookups.resolve("b.test", 443, 0.1)
    assert resolver.asked == ["a.test"]


def test_a_name_that_does_not_resolve_is_named(store, clock, resolver):
    with WebhookSink() as sink:
        notifiers = {"gone": WebhookNotifier("gone", f"http://nosuchhost.invalid:{sink.port}/", timeout=2)}
        Feed(make_engine(store, clock, (rule("gone"),), notifiers), store, clock).window(HIGH)
        DeliveryWorker(store, notifiers, clock, rng()).run_once()
        [d] = db.list_deliveries(store)
        assert d.status == "pending"
        assert d.last_error.startswith("host name 'nosuchhost.invalid' not resolved: ")


# -- TLS: connected to the address found, the certificate still checked against the name --------


class TLSReceiver:
    """An HTTPS server on 127.0.0.1 with ``cert``; records each request's SNI and Host."""

    def __init__(self, cert: Any) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        self.seen: list[tuple[str | None, str | None]] = []
        sni: list[str | None] = []
        ctx.sni_callback = lambda sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc]
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((sni[-1] if sni else None, self.headers.get("Host")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import trustme  # noqa: PLC0415 - a test-only package

    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # httpx trusts it (and only it)
    return authority


@pytest.mark.parametrize(("cert_for", "verified"), [("receiver.test", True), ("other.test", False)])
def test_tls_checks_the_certificate_against_the_host_name(store, clock, resolver, ca, cert_for, verified):
    resolver.local.add("receiver.test")
    receiver = TLSReceiver(ca.issue_cert(cert_for))
    try:
        url = f"https://receiver.test:{receiver.port}/hook"
        notifiers = {"hook": WebhookNotifier("hook", url, timeout=2)}
        Feed(make_engine(store, clock, (rule("hook"),), notifiers), store, clock).window(HIGH)
        DeliveryWorker(store, notifiers, clock, rng()).run_once()
        [d] = db.list_deliveries(store)
        assert "receiver.test" in resolver.asked
        if verified:
            assert (d.status, d.last_error) == ("sent", None)
            assert receiver.seen == [("receiver.test", f"receiver.test:{receiver.port}")]
        else:
            assert d.status == "pending" and "CERTIFICATE_VERIFY_FAILED" in d.last_error
            assert "receiver.test" in d.last_error  # "Hostname mismatch, certificate is not valid for 'receiver.test'"
            assert receiver.seen == []
    finally:
        receiver.close()
