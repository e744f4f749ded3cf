"""Broker outage: a TCP proxy between the daemon and the broker drops every connection and
refuses new ones for longer than the session timeout, then lets them through again. The
daemon stays up, reports not ready meanwhile, reconnects and loses nothing: its tables
equal a clean run's. The idle timeout (2 s) is shorter than the outage: an outage must not
be taken for a quiet stream (that would close windows early and make later rows late)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.demo.broker import broker_binary, free_port
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, stream, table_dump, wait_for
from tests.monitor.fault_helpers import (
    durable_offset,
    fault_config,
    finished,
    http_get,
    run_to_completion,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


class Proxy:
    """127.0.0.1 TCP forwarder that can drop all connections and refuse new ones."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.down = False
        self.drops = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            if self.down:
                client.close()  # the broker is "unreachable": reset at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        self.down = True
        self.drops += 1
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._closed = True
        self.drop()
        self.lsock.close()


@pytest.fixture
def proxied_broker() -> Iterator[tuple[str, Proxy]]:
    """A broker of its own that advertises the proxy's address, so every client goes through it."""
    port = free_port()
    proxy = Proxy(port)
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy.port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: _listening(port), timeout=20)
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.close()
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_broker_outage_no_loss_not_ready_meanwhile(
    proxied_broker: tuple[str, Proxy], tmp_path: Path
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    bootstrap, proxy = proxied_broker
    topic = "predictions"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    msgs = stream(windows=8, per_window=300, shift_from=4, seed=8)
    n = len(msgs)
    first = 1050  # ends inside the 4th window: it is open during the outage
    produce(bootstrap, topic, msgs[:first])

    cfg_path = fault_config(
        tmp_path / "outage", bootstrap=bootstrap, topic=topic, max_poll_records=200
    )
    cfg = load_config(cfg_path)
    events: list[tuple[str, dict[str, Any]]] = []
    daemon = Daemon(cfg, on_event=lambda k, d: events.append((k, d)))
    db = cfg.daemon.state_dir / "driftwarden.db"
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    not_ready_seen = False
    try:
        assert wait_for(lambda: durable_offset(db) >= first, timeout=30)
        assert http_get(cfg_path, "/readyz")[0] == 200
        proxy.drop()
        t_drop = time.monotonic()
        # longer than the session timeout (6 s): the group forgets the member meanwhile
        while time.monotonic() - t_drop < 8:
            status, body = http_get(cfg_path, "/readyz")
            if status == 503 and body and body["kafka"] is False:
                not_ready_seen = True
            assert t.is_alive(), "the daemon died during the outage"
            time.sleep(0.2)
        proxy.restore()
        assert wait_for(lambda: http_get(cfg_path, "/readyz")[0] == 200, timeout=30)
        produce(bootstrap, topic, msgs[first:])
        assert wait_for(lambda: finished(db, n, all_closed=True), timeout=40), durable_offset(db)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    assert not_ready_seen, "/readyz never said not ready during the outage"

    clean = run_to_completion(
        fault_config(tmp_path / "clean", bootstrap=bootstrap, topic=topic, group="clean"),
        n,
        all_closed=True,
    )
    got = table_dump(db)
    print(
        f"\noutage: {proxy.drops} drop(s) of 8 s; {len(clean['windows'])} windows / "
        f"{len(clean['metrics'])} metrics compared"
    )
    assert got == clean
