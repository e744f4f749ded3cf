"""A TCP proxy in front of the test PostgreSQL's Unix socket that can *freeze*: while
frozen it forwards nothing in either direction but keeps every connection open -- what a
client sees when the database host hangs (I/O stall, VM paused) or a firewall starts
dropping packets (until the kernel's TCP retransmission timeout, ~15 min). Its
:class:`CommitLossProxy` cuts a connection at its COMMIT instead."""

from __future__ import annotations

import socket
import threading
import time


class FreezeProxy:
    def __init__(self, pg_url: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(pg_url)
        self.user = d.get("user") or "postgres"
        self.dbname = d["dbname"]
        self.sock_path = f"{d['host']}/.s.PGSQL.{d.get('port') or 5432}"
        self.running = threading.Event()
        self.running.set()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def freeze(self) -> None:
        self.running.clear()

    def thaw(self) -> None:
        self.running.set()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX)
            up.connect(self.sock_path)
            self._serve(c, up)

    def _serve(self, c: socket.socket, up: socket.socket) -> None:
        """Forward one client connection ``c`` to the server's ``up``, both ways."""
        for a, b in ((c, up), (up, c)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                self.running.wait()
                b.sendall(data)
        except OSError:
            pass
        finally:
            _cut(a, b)

    def close(self) -> None:
        self.running.set()
        self.listener.close()


#: psycopg ends a transaction with this simple-protocol message
COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"


class CommitLossProxy(FreezeProxy):
    """A proxy that, once armed (:meth:`arm`), cuts the connection that sends the next
    COMMIT: by default the COMMIT reaches the server, which commits, and only its answer
    is lost (a failover or a network cut at the wrong moment: the client cannot tell
    whether it committed); with ``reaches_server=False`` the COMMIT itself is dropped and
    the server rolls the transaction back when the connection goes."""

    def __init__(self, pg_url: str) -> None:
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.reaches_server = True
        super().__init__(pg_url)

    def arm(self, *, reaches_server: bool = True) -> None:
        self.reaches_server = reaches_server
        self.fired.clear()
        self.armed.set()

    def _serve(self, c: socket.socket, up: socket.socket) -> None:
        muted = threading.Event()
        threading.Thread(target=self._up, args=(c, up, muted), daemon=True).start()
        threading.Thread(target=self._down, args=(up, c, muted), daemon=True).start()

    def _up(self, c: socket.socket, up: socket.socket, muted: threading.Event) -> None:
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                if self.armed.is_set() and COMMIT in data:
                    self.armed.clear()
                    muted.set()
                    if self.reaches_server:
                        up.sendall(data)
                        time.sleep(0.5)  # the server commits; its answer is dropped
                    self.fired.set()
                    break
                up.sendall(data)
        except OSError:
            pass
        finally:
            _cut(c, up)

    def _down(self, up: socket.socket, c: socket.socket, muted: threading.Event) -> None:
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                if not muted.is_set():
                    c.sendall(data)
        except OSError:
            pass


def _cut(*socks: socket.socket) -> None:
    """Shut both directions of each socket, ignoring those already gone."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
