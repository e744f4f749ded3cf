"""systemd's readiness protocol (``sd_notify(3)``), implemented directly: it is one datagram.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket path, or
``@name`` for the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``). Each message is newline-separated ``KEY=VALUE`` lines in one
datagram: ``READY=1``, ``RELOADING=1`` (with ``MONOTONIC_USEC``), ``STOPPING=1``,
``WATCHDOG=1``, ``STATUS=…``. Without ``NOTIFY_SOCKET`` (not under systemd) every call
is a no-op, so the daemon never needs to know how it was started.

Sending never raises: a full or vanished socket must not stop the daemon; the first
failure is logged, later ones only at debug level.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger("driftwarden.systemd")

#: a STATUS= text is cut to this many characters (systemd shows one line)
MAX_STATUS = 200
#: seconds of start timeout each ``EXTEND_TIMEOUT_USEC`` asks for, and seconds between two
#: asks (well inside it: a late datagram must not let the timeout lapse)
EXTEND_BY = 90.0
EXTEND_EVERY = 20.0


def _address(raw: str) -> str | None:
    """The socket address for ``NOTIFY_SOCKET``: a path, or ``@name`` for the abstract namespace."""
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # vsock: and relative paths are not supported


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout in seconds, or None when no watchdog is asked of this process.

    ``WATCHDOG_PID``, when set, must be our pid (a child inherits the environment but is
    not the one being watched). A non-numeric or zero ``WATCHDOG_USEC`` means none.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    wpid = environ.get("WATCHDOG_PID", "")
    if wpid and wpid != str(pid):
        return None
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


class SystemdNotifier:
    """Talks to the service manager; a no-op unless ``NOTIFY_SOCKET`` is set.

    The watchdog is kicked by :meth:`heartbeat`, which the daemon's main loop calls on
    every turn: if the loop stops turning, no ``WATCHDOG=1`` is sent and systemd restarts
    the service after ``WatchdogSec``. A kick is sent at most every half timeout.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path: systemd notifications off", raw)
        self.watchdog = watchdog_interval(env, os.getpid() if pid is None else pid) if self.address else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False
        self._last_kick = 0.0
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True when it went out."""
        if self.address is None or not fields:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
            except OSError as exc:
                if not self._failed:
                    log.warning("systemd notification failed (%s): %s", fields[0], exc)
                    self._failed = True
                else:
                    log.debug("systemd notification failed (%s): %s", fields[0], exc)
                return False
        return True

    # -- the messages ---------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.send("READY=1", *self._status_field(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts; systemd ≥ 253 wants the monotonic time with it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status_field(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """One status line (shown by ``systemctl status``); unchanged text is not resent."""
        text = _clean(text)
        if text == self._last_status:
            return False
        return self.send(*self._status_field(text))

    def heartbeat(self, now: float | None = None) -> bool:
        """Kick the watchdog if half its timeout has passed since the last kick."""
        if self.watchdog is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_kick < self.watchdog / 2:
            return False
        self._last_kick = now
        return self.send("WATCHDOG=1")

    @contextmanager
    def extending(self, status: str, *, every: float = EXTEND_EVERY) -> Iterator[None]:
        """While the block runs (start-up: a schema migration, references to prepare),
        ask systemd every ``every`` seconds for :data:`EXTEND_BY` more seconds of start
        timeout (``EXTEND_TIMEOUT_USEC``, systemd 236+), with ``status``. A long migration
        is then not killed by ``TimeoutStartSec`` and begun again at every restart; a
        process that hangs stops asking and is still stopped. A no-op without systemd."""
        if self.address is None:
            yield
            return

        def extend() -> None:
            self.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1_000_000)}", *self._status_field(status))

        with repeated(extend, every, name="systemd-extend", at_once=True):
            yield

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _status_field(self, text: str | None) -> list[str]:
        if text is None:
            return []
        self._last_status = _clean(text)
        return [f"STATUS={self._last_status}"]


def _clean(text: str) -> str:
    """One line, bounded: STATUS is line-oriented."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_STATUS else text[: MAX_STATUS - 1] + "…"


@contextmanager
def repeated(
    task: Callable[[], None], every: float, *, name: str, at_once: bool = False, for_at_most: float | None = None
) -> Iterator[None]:
    """Run ``task`` every ``every`` seconds in a daemon thread named ``name`` while the
    block runs: first at once when ``at_once``, else after ``every``; for at most
    ``for_at_most`` seconds from the start (None: as long as the block). When the block
    ends the thread is told to stop and joined (5 s at most: a ``task`` that hangs is left
    behind, a daemon thread)."""
    done = threading.Event()
    until = None if for_at_most is None else time.monotonic() + for_at_most

    def run() -> None:
        if at_once:
            task()
        while not done.wait(every) and (until is None or time.monotonic() < until):
            task()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
