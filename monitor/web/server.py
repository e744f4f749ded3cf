"""The daemon's HTTP interface (default 127.0.0.1:9308): litestar served by uvicorn.

Routes, error shape and limits: see ``monitor.web.app``. The server runs on one
event loop in one background thread (no thread per connection; sync handlers use
a bounded pool). uvicorn installs no signal handlers there (it only does so in the
main thread): the daemon owns SIGTERM/SIGINT and calls :meth:`ApiServer.stop`.

:meth:`ApiServer.start` binds the socket at once (a port in use fails the caller)
and returns; litestar and uvicorn are imported and the app built in the server
thread, so neither ``--help`` nor the daemon's start-up waits for them.
Connections that arrive meanwhile wait in the listen backlog.

Limits (``[daemon]``): ``http_max_connections`` open connections, of which
``http_max_client_connections`` from one client address (beyond either: 503 and closed), ``http_idle_timeout`` to send a complete request head (idle keep-alive
and slowloris headers), ``http_body_timeout`` for a whole body, ``max_json_bytes``
and ``max_reference_bytes`` per route; request line + headers at most 16 KiB (h11).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.web.view import DaemonView

log = logging.getLogger("driftwarden.http")

#: seconds in-flight requests get to finish when the daemon stops
GRACEFUL_STOP_S = 3.0


#: why a bind may succeed later or for another process: the address is held by another
#: socket (EADDRINUSE), a privileged port this process may not take but a service with
#: CAP_NET_BIND_SERVICE may (EACCES), the resolver unreachable for now (EAI_AGAIN)
PASSING = {errno.EADDRINUSE: "in use by another process, or by this daemon already running:"
                              " stop that, or set daemon.http_listen to a free host:port",
           errno.EACCES: "a port below 1024 needs root or CAP_NET_BIND_SERVICE, which the service may have",
           socket.EAI_AGAIN: "the name could not be resolved for now"}


class ListenError(RuntimeError):
    """The listen address cannot be bound (in use, not an address of this host): the
    message names ``daemon.http_listen`` and the reason. ``passing``: why it may bind later
    or for the service (see :data:`PASSING`), or None when it never will on this host."""

    def __init__(self, message: str, *, passing: str | None = None) -> None:
        super().__init__(message)
        self.passing = passing


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; raises :class:`ListenError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, a host name that does not resolve
        # create_server's own error text also repeats the address: the errno's words suffice
        # (a host name that does not resolve: create_server re-raises the gaierror as an
        # OSError whose errno, EAI_NONAME, is no OS error number: os.strerror says "Unknown error -2")
        if exc.errno and exc.errno > 0:
            reason = os.strerror(exc.errno)
        else:
            reason = (exc.strerror or str(exc)).split(" (while attempting to bind", 1)[0]
        raise ListenError(f"daemon.http_listen: cannot listen on {host}:{port}: {reason}",
                          passing=PASSING.get(exc.errno or 0)) from None


class ApiServer:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.host, self.port = daemon.config.daemon.listen_address
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.serving = threading.Event()
        self._stopping = threading.Event()
        from monitor.web.metrics import DaemonMetrics  # noqa: PLC0415

        self.metrics = DaemonMetrics(daemon)

    def start(self) -> None:
        """Bind now (raises :class:`ListenError`), serve from a background thread (see the
        module docstring)."""
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="http", daemon=True)
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            import uvicorn  # noqa: PLC0415

            from monitor.web.app import create_app  # noqa: PLC0415
            from monitor.web.protocol import guarded_protocol  # noqa: PLC0415
            from monitor.web.uploads import remove_partial_uploads  # noqa: PLC0415

            d = self.daemon.config.daemon
            removed = remove_partial_uploads(d.state_dir)
            if removed:
                log.info("http: removed %d partial upload(s) of an earlier run", removed)
            idle = d.http_idle_timeout.total_seconds()
            config = uvicorn.Config(
                create_app(self.daemon, self.metrics),
                http=guarded_protocol(idle_timeout=idle, max_connections=d.http_max_connections,
                                      max_client_connections=d.client_connection_cap),
                ws="none",
                lifespan="off",
                loop="asyncio",
                interface="asgi3",
                log_config=None,
                access_log=False,
                server_header=False,
                proxy_headers=False,
                timeout_keep_alive=idle,  # type: ignore[arg-type]  # seconds; a float works
                timeout_graceful_shutdown=GRACEFUL_STOP_S,  # type: ignore[arg-type]
            )
            # uvicorn's info lines are noise, and its warnings (one per malformed request)
            # would let any client flood the log; its errors still show
            logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
            server = uvicorn.Server(config)
            self._server = server
            if self._stopping.is_set():
                return
            log.info("http: serving on %s", self.url)
            self.serving.set()
            server.run(sockets=[sock])
        except BaseException:  # noqa: BLE001 - the daemon goes on without its HTTP API
            log.exception("http: the server stopped")
        finally:
            self.serving.clear()
            sock.close()

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (at most ``GRACEFUL_STOP_S``), join."""
        if self._thread is None:
            return
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=GRACEFUL_STOP_S + 5)
        if self._thread.is_alive():
            log.warning("http: server thread did not stop in time")
        self._thread = None
        self._server = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
