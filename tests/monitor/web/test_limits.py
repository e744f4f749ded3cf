"""The HTTP server's resource limits, each shown to hold and each [daemon] key shown to change it.

Real sockets against the real server. Timeouts are set to a second or two and
the assertions compare against generous bounds on either side (closed within
ten times the timeout; still open well before it), never a precise duration.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.demo.broker import free_port
from storage.records import WindowKey, WindowRecord
from storage.windows import write_window
from tests.monitor.daemon_helpers import wait_for, write_config
from tests.monitor.web.http_helpers import (
    AUTH,
    TOKEN,
    TOKEN_ENV,
    Api,
    Reply,
    closed_by_server,
    http,
    read_reply,
    rss_kb,
    running_api,
    wait_serving,
)
from tests.store_targets import StoreTarget

HUNDRED_MB = 100_000_000
SILENCE = b'{"model": "churn", "duration": "1h", "comment": "a comment of some forty bytes ..."}'


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


# -- bodies that are never read --------------------------------------------------------------


def test_an_unauthenticated_100mb_upload_is_refused_without_being_read(tmp_path: Path) -> None:
    """The real daemon (``driftwarden run`` in a subprocess): the answer comes before the body,
    the server closes the connection rather than read it, and its memory does not grow."""
    port = free_port()
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=port,
                       daemon_extra=f'api_token_env = "{TOKEN_ENV}"')
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli.app", "run", "-c", str(cfg)],
                            env={**os.environ, TOKEN_ENV: TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_serving(port, timeout=60)
        rss_before = rss_kb(proc.pid)
        with _connect(port) as s:
            s.sendall(b"POST /api/v1/models/churn/references?version=v9 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: text/csv\r\nContent-Length: %d\r\n\r\n" % HUNDRED_MB)
            # not one body byte sent yet, and the answer is already there
            reply = read_reply(s)
            assert reply.status == 401 and reply.json() == {"error": "missing or wrong bearer token"}
            assert reply.headers["connection"] == "close"
            sent, chunk = 0, b"a,b\n" * (1 << 18)  # 1 MiB
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < HUNDRED_MB:
                    sent += s.send(chunk)
        # the kernel's socket buffers take a few MiB; the server read none of it
        assert sent < 16 * (1 << 20), sent
        grown_mb = (rss_kb(proc.pid) - rss_before) / 1024
        assert grown_mb < 20, f"server RSS grew by {grown_mb:.0f} MB"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_an_upload_over_max_reference_bytes_is_refused_before_its_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (tmp_path / "ref.csv")
    with running_api(tmp_path / "default", monkeypatch) as a:
        body.write_bytes((a.config.parent / "reference.csv").read_bytes())
        ok = http(a.port, "POST", "/api/v1/models/churn/references?version=v2", body.read_bytes(), AUTH)
        assert ok.status == 201, ok.body
    with running_api(tmp_path / "small", monkeypatch, daemon_extra="max_reference_bytes = 1000") as a:
        with _connect(a.port) as s:
            s.sendall(b"POST /api/v1/models/churn/references?version=v2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (TOKEN.encode(), body.stat().st_size))
            reply = read_reply(s)  # before the body
        assert reply.status == 413
        assert reply.json() == {"error": "body larger than 1000 bytes"}
        assert not list((a.daemon.config.daemon.state_dir / "references").glob("churn/*"))


def test_max_json_bytes_caps_json_bodies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path / "default", monkeypatch) as a:
        assert http(a.port, "POST", "/api/v1/silences", SILENCE, AUTH).status == 201
    with running_api(tmp_path / "small", monkeypatch, daemon_extra="max_json_bytes = 50") as a:
        r = http(a.port, "POST", "/api/v1/silences", SILENCE, AUTH)
        assert (r.status, r.json()) == (413, {"error": "body larger than 50 bytes"})


# -- slow and idle clients -----------------------------------------------------------------


def test_an_idle_connection_is_closed_after_http_idle_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path / "short", monkeypatch, daemon_extra='http_idle_timeout = "1s"') as a:
        with _connect(a.port) as s:  # connects, never sends
            assert closed_by_server(s, within=10)
        with _connect(a.port) as s:  # one request, then idle on keep-alive
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_reply(s).status == 200
            assert closed_by_server(s, within=10)
    with running_api(tmp_path / "long", monkeypatch, daemon_extra='http_idle_timeout = "30s"') as a:
        with _connect(a.port) as s:
            assert not closed_by_server(s, within=3)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # still served
            assert read_reply(s).status == 200


def test_a_client_that_pipelines_requests_and_reads_nothing_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn waits for the write buffer to drain with no deadline: a client that sent a
    few hundred requests in one go and read no answer held its connection for ever (past
    the head deadline: each head was complete), so a handful of them kept its address's cap
    full. It is dropped once it has read nothing for http_idle_timeout."""
    with running_api(tmp_path, monkeypatch, daemon_extra='http_idle_timeout = "1s"') as a:
        def open_here() -> int:
            return len(a.server._server.server_state.connections)

        with _connect(a.port) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /static/uPlot.iife.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 400)  # ~20 MB of answers
            assert wait_for(lambda: open_here() == 1, timeout=10)
            assert wait_for(lambda: open_here() == 0, timeout=20)  # 1 s after its reading stalled
        # one that reads its answers, in small bites, gets all of them
        size = len(http(a.port, "GET", "/static/uPlot.iife.min.js").body)
        with _connect(a.port) as s:
            s.sendall(b"GET /static/uPlot.iife.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 20)
            got = b""
            while got.count(b"HTTP/1.1 200 OK") < 20 or len(got) < 20 * size:
                chunk = s.recv(16384)
                assert chunk, f"closed after {len(got)} bytes"
                got += chunk
                time.sleep(0.01)


def test_headers_trickled_slowly_are_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slowloris: each byte would reset uvicorn's own keep-alive timer; ours counts from the start."""
    with running_api(tmp_path, monkeypatch, daemon_extra='http_idle_timeout = "1s"') as a:
        with _connect(a.port) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            cut_off = False
            for _ in range(40):  # 10 s of trickling, ten times the timeout
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    cut_off = True
                    break
                time.sleep(0.25)
            assert cut_off or closed_by_server(s, within=0.5)


def test_an_incomplete_head_over_16kib_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path, monkeypatch) as a, _connect(a.port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(40):  # 40 KiB of header lines, never the blank line
                s.sendall(b"X-Pad: " + b"a" * 1015 + b"\r\n")
                time.sleep(0.01)
        reply = read_reply(s)
        assert reply.status == 400
        assert reply.json() == {"error": "malformed HTTP request (framing, headers or Content-Length)"}


def _trickled_silence(port: int, seconds: float) -> tuple[int, dict[str, str]]:
    """POST a silence whose body trickles in over ``seconds``; (status, JSON reply)."""
    with _connect(port) as s:
        s.sendall(b"POST /api/v1/silences HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Length: %d\r\n\r\n" % (TOKEN.encode(), len(SILENCE)))
        step = seconds / 10
        pieces = [SILENCE[i:i + len(SILENCE) // 10 + 1] for i in range(0, len(SILENCE), len(SILENCE) // 10 + 1)]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in pieces:
                s.sendall(piece)
                time.sleep(step)
        reply = read_reply(s)
        return reply.status, reply.json()


def test_a_body_trickled_slowly_gets_408(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path / "short", monkeypatch, daemon_extra='http_body_timeout = "1s"') as a:
        assert _trickled_silence(a.port, seconds=4) == (408, {"error": "request body not received within 1s"})
    with running_api(tmp_path / "long", monkeypatch, daemon_extra='http_body_timeout = "20s"') as a:
        status, body = _trickled_silence(a.port, seconds=2)
        assert status == 201 and body["id"]


# -- connections: no thread each, and a cap ------------------------------------------------


def test_many_idle_connections_create_no_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path, monkeypatch, daemon_extra="http_max_connections = 400\nhttp_max_client_connections = 400") as a:
        before = threading.active_count()
        conns = [_connect(a.port) for _ in range(300)]
        try:
            time.sleep(0.5)  # let the server accept them all
            assert threading.active_count() <= before
            # all held open (none refused) and the server still answers
            assert not closed_by_server(conns[-1], within=0.2)
            assert http(a.port, "GET", "/healthz").status == 200
        finally:
            for c in conns:
                c.close()


def _refused_at_once(port: int, error: str) -> bool:
    """Whether a new connection gets 503 ``{"error": error}`` before sending anything."""
    with _connect(port) as extra:
        extra.settimeout(2)
        try:
            reply = read_reply(extra)
        except (OSError, ConnectionError):  # accepted after all: no answer yet
            return False
        return reply.status == 503 and reply.json() == {"error": error}


def test_connections_beyond_http_max_connections_get_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path, monkeypatch, daemon_extra="http_max_connections = 5") as a:
        held = [_connect(a.port) for _ in range(5)]
        try:
            # poll: the server counts a connection once its event loop accepted it
            assert wait_for(lambda: _refused_at_once(a.port, "too many connections; try again later"), timeout=10)
            held.pop().close()
            assert wait_for(lambda: http(a.port, "GET", "/healthz").status == 200, timeout=10)
        finally:
            for c in held:
                c.close()


def test_one_client_address_cannot_hold_every_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client holding connections open (incomplete heads, reconnecting) kept /healthz at
    503 for as long as it liked, and a liveness probe then restarts the daemon: one
    address gets http_max_client_connections, others still get in."""
    extra = "http_max_connections = 10\nhttp_max_client_connections = 3"
    with running_api(tmp_path, monkeypatch, daemon_extra=extra) as a:
        held = [_connect(a.port) for _ in range(3)]
        try:
            error = "too many connections from this address; try again later"
            assert wait_for(lambda: _refused_at_once(a.port, error), timeout=10)
            # another address (127.0.0.2 is loopback too) still gets in
            with socket.create_connection(("127.0.0.1", a.port), timeout=5, source_address=("127.0.0.2", 0)) as other:
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                assert read_reply(other).status == 200
            held.pop().close()
            assert wait_for(lambda: http(a.port, "GET", "/healthz").status == 200, timeout=10)
        finally:
            for c in held:
                c.close()


def test_requests_left_by_their_client_still_count_against_the_caps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request goes on after its client closes the connection, and the connection caps
    stopped counting it: 200 wide requests sent and dropped one after the other queued a
    store read each, and an alerts read waited 14 s behind them. Requests in progress are
    capped per client address and in all, as connections are."""
    import storage.alerts  # noqa: PLC0415

    extra = "http_max_connections = 10\nhttp_max_client_connections = 3"
    with running_api(tmp_path, monkeypatch, daemon_extra=extra) as a:
        release = threading.Event()
        real = storage.alerts.list_alerts
        calls: list[int] = []

        def slow(*args: object, **kwargs: object) -> list[dict[str, object]]:
            calls.append(1)
            release.wait(30)
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(storage.alerts, "list_alerts", slow)

        def fire_and_forget(source: str, n: int) -> None:
            for _ in range(n):
                with socket.create_connection(("127.0.0.1", a.port), timeout=5, source_address=(source, 0)) as s:
                    s.sendall(b"GET /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                time.sleep(0.2)  # closed: the connection caps no longer count it

        def answer(source: str) -> Reply:
            with socket.create_connection(("127.0.0.1", a.port), timeout=10, source_address=(source, 0)) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return read_reply(s)

        try:
            fire_and_forget("127.0.0.1", 8)
            r = answer("127.0.0.1")
            assert (r.status, r.json()) == (503, {"error": "too many requests in progress from this address; try again later"})
            assert r.headers["retry-after"] == "5"
            assert answer("127.0.0.2").json() == {"status": "ok"}  # another address still gets in
            for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                fire_and_forget(source, 3)
            r = answer("127.0.0.5")
            assert (r.status, r.json()) == (503, {"error": "too many requests in progress; try again later"})
        finally:
            release.set()
        assert wait_for(lambda: answer("127.0.0.1").status == 200, timeout=20)
        # 3 from the first address, 7 more in all (6 worker threads: the last ones run late)
        assert wait_for(lambda: len(calls) >= 10, timeout=20)
        time.sleep(0.5)
        assert len(calls) == 10  # none of the others ran


def test_at_most_two_scrapes_run_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each /metrics exposition reads the store in a worker thread: 20 at once took 47 s
    each and the threads the API's reads need. A third one while two run gets 503."""
    with running_api(tmp_path, monkeypatch) as a:
        release = threading.Event()
        real = a.server.metrics.exposition
        inside: list[int] = []

        def slow() -> tuple[bytes, str]:
            inside.append(1)
            release.wait(20)
            return real()

        monkeypatch.setattr(a.server.metrics, "exposition", slow)
        answers: list[int] = []
        scrapers = [threading.Thread(target=lambda: answers.append(http(a.port, "GET", "/metrics", timeout=30).status))
                    for _ in range(2)]
        for t in scrapers:
            t.start()
        try:
            assert wait_for(lambda: len(inside) == 2, timeout=10)
            r = http(a.port, "GET", "/metrics", timeout=30)
            assert (r.status, r.json()) == (503, {"error": "2 scrapes are running; try again later"})
            assert r.headers["retry-after"] == "5"
            assert http(a.port, "GET", "/healthz").status == 200
        finally:
            release.set()
            for t in scrapers:
                t.join(30)
        assert answers == [200, 200]
        assert http(a.port, "GET", "/metrics").status == 200


def test_at_most_two_dashboard_pages_are_built_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page reads the store in a worker thread (a 1,000-column model's: 2 s, ~240 MB):
    10 at once took 1.4 GB and every worker thread, an alerts read waited 10 s. Two are
    built at once, eight more wait for a turn, the next one gets 503; reads go on meanwhile."""
    from monitor.web import dashboard  # noqa: PLC0415

    with running_api(tmp_path, monkeypatch) as a:
        release = threading.Event()
        real = dashboard.gather
        inside: list[int] = []

        def slow(d: object, model: str | None) -> dict[str, object]:
            inside.append(1)
            release.wait(30)
            return real(d, model)  # type: ignore[arg-type]

        monkeypatch.setattr(dashboard, "gather", slow)
        queued = 10  # MAX_PAGES + MAX_PAGES_WAITING
        answers: list[int] = []
        viewers = [threading.Thread(target=lambda: answers.append(http(a.port, "GET", "/", timeout=40).status))
                   for _ in range(queued)]
        for t in viewers:
            t.start()
        try:
            assert wait_for(lambda: len(inside) >= 2, timeout=10)
            assert wait_for(lambda: a.server._server is not None and len(a.server._server.server_state.connections) >= 10,
                            timeout=10)
            time.sleep(0.5)
            assert len(inside) == 2  # the others wait for a turn, not in a worker thread
            r = http(a.port, "GET", "/", timeout=10)
            assert (r.status, r.json()) == (503, {"error": "busy building other pages; try again shortly"})
            assert r.headers["retry-after"] == "5"
            started = time.monotonic()
            assert http(a.port, "GET", "/api/v1/alerts", timeout=10).json() == {"alerts": []}
            assert time.monotonic() - started < 5
        finally:
            release.set()
            for t in viewers:
                t.join(40)
        assert answers == [200] * queued and len(inside) == queued
        assert http(a.port, "GET", "/").status == 200


# -- limit ---------------------------------------------------------------------------------


def _store_windows(api: Api, n: int) -> None:
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    store = api.daemon.store
    with store.transaction():
        for i in range(n):
            start, end = t0 + timedelta(minutes=i), t0 + timedelta(minutes=i + 1)
            key = WindowKey("churn", "v1", "", start.isoformat(), end.isoformat())
            write_window(store, WindowRecord(key=key, rows=100, status="ok", computed_at=end), [])


@pytest.mark.parametrize(("query", "rows"), [
    ("", 100), ("?limit=0", 1), ("?limit=-5", 1), ("?limit=7", 7), ("?limit=1000", 1000),
    ("?limit=5000", 1000), ("?limit=99999999999999999999", 1000),
])
def test_limit_is_clamped_to_1_to_1000(api_with_windows: Api, query: str, rows: int) -> None:
    r = http(api_with_windows.port, "GET", f"/api/v1/models/churn/windows{query}")
    assert r.status == 200
    assert len(r.json()["windows"]) == rows


@pytest.fixture(scope="module")
def api_with_windows(tmp_path_factory: pytest.TempPathFactory, module_store_target: StoreTarget):  # type: ignore[no-untyped-def]
    """1005 windows in each store: the clamped limit is the query's LIMIT on both."""
    with pytest.MonkeyPatch.context() as mp, running_api(
        tmp_path_factory.mktemp("w"), mp, storage=module_store_target.storage_toml()
    ) as a:
        _store_windows(a, 1005)
        yield a


def test_windows_with_their_figures_are_capped_by_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`limit` counts windows, and a wide model's window holds thousands of figures: with
    metrics=1 an answer holds at most MAX_METRIC_ROWS figures (the newest windows, whole),
    and says so, instead of tens of MB built in the daemon's memory."""
    from monitor.web import app as web_app  # noqa: PLC0415
    from storage.records import MetricRow  # noqa: PLC0415

    monkeypatch.setattr(web_app, "MAX_METRIC_ROWS", 250)
    with running_api(tmp_path, monkeypatch) as a:
        t0 = datetime(2026, 11, 23, tzinfo=UTC)
        with a.daemon.store.transaction():
            for i in range(6):
                start, end = t0 + timedelta(minutes=i), t0 + timedelta(minutes=i + 1)
                key = WindowKey("churn", "v1", "", start.isoformat(), end.isoformat())
                figures = [MetricRow(f"c{j}", "drift_score", 0.1) for j in range(100)]
                write_window(a.daemon.store, WindowRecord(key=key, rows=100, status="ok", computed_at=end), figures)
        got = http(a.port, "GET", "/api/v1/models/churn/windows?metrics=1&limit=5").json()
        assert [len(w["metrics"]) for w in got["windows"]] == [100, 100]  # a third would make 300
        assert got["windows"][0]["end"] > got["windows"][1]["end"]  # the newest
        assert got["truncated"].startswith("the 2 newest of the 5 windows asked for: with their figures they hold"
                                           " at most 250 figures in one answer")
        whole = http(a.port, "GET", "/api/v1/models/churn/windows?metrics=1&limit=2").json()
        assert "truncated" not in whole and len(whole["windows"]) == 2
        assert len(http(a.port, "GET", "/api/v1/models/churn/windows?limit=5").json()["windows"]) == 5


def test_limit_applies_to_silences_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_target: StoreTarget) -> None:
    with running_api(tmp_path, monkeypatch, storage=store_target.storage_toml()) as a:
        for _ in range(3):
            assert http(a.port, "POST", "/api/v1/silences", SILENCE, AUTH).status == 201
        assert len(http(a.port, "GET", "/api/v1/silences").json()["silences"]) == 3
        assert len(http(a.port, "GET", "/api/v1/silences?limit=0").json()["silences"]) == 1
        assert len(http(a.port, "GET", "/api/v1/silences?limit=2").json()["silences"]) == 2
        # as `silence list --json` has them: whether each is in force now
        assert [s["active"] for s in http(a.port, "GET", "/api/v1/silences").json()["silences"]] == [True] * 3


@pytest.mark.sqlite_only("SQLite: one connection per store object; a PostgreSQL pool serves each thread its own")
def test_reads_do_not_wait_behind_the_consumers_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer's connection held (a flush waiting on a lock, for as long as its busy
    timeout): the dashboard took 37 s and /metrics 19 s. The HTTP layer reads through a
    read-only connection of its own."""
    with running_api(tmp_path, monkeypatch) as a:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with a.daemon.store.transaction():  # the consumer's connection, busy
                held.set()
                release.wait(30)

        t = threading.Thread(target=hold)
        t.start()
        try:
            assert held.wait(10)
            for path in ("/api/v1/alerts", "/api/v1/models/churn/windows", "/metrics", "/"):
                # behind the held connection, it would wait until release: the 10 s timeout
                assert http(a.port, "GET", path, timeout=10).status == 200, path
        finally:
            release.set()
            t.join(30)
