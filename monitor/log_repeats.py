"""Collapsing a library's repeated log lines: the first of each kind shows, its repeats
are counted and summarised on the next line of that kind once the period is over.

kafka-python logs every failed connection attempt with three or four lines (connection
refused, connection lost, bootstrap failed, waiting ...), so a broker that is away buried
the daemon's own line in dozens of them. :class:`RepeatFilter` sits on the log handler
and lets through, per *kind* of line, the first one and then at most one per
``period``, that one saying how many were held back meanwhile. A kind is the logger,
the level and the final message with its numbers blanked (a backoff of 0.40 secs and one
of 6.37 secs are the same line), so a different error (an authentication failure or a
TLS error after "connection refused") is a different kind and shows at once.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: numbers (hexadecimal addresses, decimals, counters) vary between repeats of one line
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


def kind_of(record: logging.LogRecord) -> tuple[str, int, str]:
    """What makes two records repeats of each other: logger, level, message sans numbers."""
    return record.name, record.levelno, _NUMBERS.sub("#", record.getMessage())


@dataclass
class _Seen:
    shown_at: float  # when a line of this kind last went through
    held: int = 0  # how many were held back since


class RepeatFilter(logging.Filter):
    """A handler filter for the records of the ``prefixes`` logger hierarchies (others
    pass untouched): the first record of each kind passes, repeats within ``period``
    seconds are dropped, and the first repeat after it passes with
    ``(repeated N times in the last 60s)`` appended and a ``repeated`` field (a
    top-level key in the JSON format). At most ``max_kinds`` kinds are remembered (the
    least recently seen is forgotten first: memory stays bounded whatever a library
    logs). Thread-safe: the client's IO thread and the daemon's threads log at once."""

    def __init__(
        self, prefixes: tuple[str, ...] = ("kafka",), *, period: float = 60.0, max_kinds: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.period = period
        self.max_kinds = max_kinds
        self.clock = clock
        self._seen: OrderedDict[tuple[str, int, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def _applies(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._applies(record.name):
            return True
        kind, now = kind_of(record), self.clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is None:
                self._seen[kind] = _Seen(shown_at=now)
                while len(self._seen) > self.max_kinds:
                    self._seen.popitem(last=False)
                return True
            self._seen.move_to_end(kind)
            if now - seen.shown_at < self.period:
                seen.held += 1
                return False
            held, since = seen.held, now - seen.shown_at
            seen.shown_at, seen.held = now, 0
        if held:
            record.msg = f"{record.getMessage()} (repeated {held} times in the last {since:.0f}s)"
            record.args = None
            record.repeated = held
        return True

    @property
    def kinds(self) -> int:
        """How many kinds of line are remembered now."""
        with self._lock:
            return len(self._seen)
