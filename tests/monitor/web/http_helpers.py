"""A real daemon (not consuming) with its real HTTP server on 127.0.0.1, and raw-socket requests.

The daemon object is built from a real config and state dir (its store SQLite, or
the shared PostgreSQL of a ``[storage]`` table; reference loaded and validated); Kafka is never contacted because ``run()`` is not called:
only the HTTP server is started, exactly as ``Daemon.run`` starts it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.demo.broker import free_port
from monitor.service.daemon import Daemon
from monitor.web.server import ApiServer
from tests.monitor.daemon_helpers import write_config

TOKEN = "test-http-token-0123456789"
TOKEN_ENV = "DRIFTWARDEN_TEST_HTTP_TOKEN"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    daemon: Daemon
    server: ApiServer
    config: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def running_api(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, daemon_extra: str = "", token: bool = True,
    model_extra: str = "", storage: str = "",
) -> Iterator[Api]:
    """The daemon's HTTP API on a free port; ``daemon_extra`` lines go under [daemon];
    ``storage``: a ``[storage]`` table (``StoreTarget.storage_toml()``, "" for SQLite)."""
    extra = daemon_extra
    if token:
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        extra = f'api_token_env = "{TOKEN_ENV}"\n{extra}'
    path = write_config(folder, bootstrap="127.0.0.1:9", topic="unused", http_port=free_port(), daemon_extra=extra,
                        extra=storage)
    if model_extra:
        text = path.read_text()
        path.write_text(text.replace('reference = "reference.csv"\n', f'reference = "reference.csv"\n{model_extra}\n'))
    daemon = Daemon(load_config(path), http=False)
    server = ApiServer(daemon)
    server.start()
    try:
        assert wait_serving(server.port), "the HTTP server did not answer"
        yield Api(daemon, server, path)
    finally:
        server.stop()
        daemon.close()


def wait_serving(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, _, _ = request(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            if status == 200:
                return True
        time.sleep(0.05)
    return False


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(sock: socket.socket) -> Reply:
    """One HTTP/1.1 response (Content-Length framed, as every response of ours is)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Reply(status, headers, rest[:n])


def request(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        r = read_reply(s)
        return r.status, r.headers, r.body


def http(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str | None] | None = None,
         timeout: float = 10) -> Reply:
    """One request on a fresh connection, written by hand (so it can be malformed on purpose).

    A POST gets ``Content-Length: len(body)`` unless ``headers`` name a Content-Length
    or Transfer-Encoding; a header given as ``None`` is left out.
    """
    headers = headers or {}
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items() if v is not None]
    framed = {k.lower() for k in headers} & {"content-length", "transfer-encoding"}
    if method == "POST" and not framed:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        return read_reply(s)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")
