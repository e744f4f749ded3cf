"""A stand-in for systemd's notification socket: a real unix datagram socket, recorded."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType


class NotifySocket:
    """Binds a unix datagram socket (short path: sun_path holds 108 bytes) and records
    every datagram as ``(monotonic time, [KEY=VALUE, ...])`` from a reader thread."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dw-notify-", dir="/tmp"))
        self.path = self.folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode().split("\n")))

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        out = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            out["WATCHDOG_USEC"] = str(watchdog_usec)
        return out

    def snapshot(self) -> list[tuple[float, list[str]]]:
        with self._lock:
            return list(self.messages)

    def times(self, field: str, since: float = 0.0) -> list[float]:
        """When each datagram holding ``field`` (e.g. ``"WATCHDOG=1"``) arrived."""
        return [t for t, fields in self.snapshot() if field in fields and t >= since]

    def statuses(self) -> list[str]:
        return [f[7:] for _, fields in self.snapshot() for f in fields if f.startswith("STATUS=")]

    def has(self, field: str) -> bool:
        return bool(self.times(field))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def max_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] without an event."""
    points = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))

