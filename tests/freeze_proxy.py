"""A TCP proxy in front of the test PostgreSQL's Unix socket that can *freeze*: while
frozen it forwards nothing in either direction but keeps every connection open -- what a
client sees when the database host hangs (I/O stall, VM paused) or a firewall starts
dropping packets (until the kernel's TCP retransmission timeout, ~15 min)."""

from __future__ import annotations

import socket
import threading


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
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.running.set()
        self.listener.close()
