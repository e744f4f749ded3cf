"""The daemon's own word on Kafka being away: one clear line at the first failed
connection attempt, naming the brokers and what happens next, then one a minute while
it lasts, and one when the brokers are reachable again.

An error once connected that is not about reaching the brokers (an authorisation
failure, say) is no outage: :meth:`KafkaOutage.error` names it as it is, once, then at
most once a minute with a count while it recurs; the reconnects it leads to are not
"reachable again".

kafka-python's consumer bootstraps inside its constructor and keeps retrying there for
``bootstrap_timeout_ms`` (30 s) before it raises; its only word meanwhile is its own
log lines. :class:`BootstrapWatch` listens to those for the duration of one connect, so
the first refused or failed connection is reported at once, not 30 s later.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from monitor.config import format_duration

log = logging.getLogger("driftwarden.daemon")

#: the client's logger of connection and bootstrap failures ("Connection failed: ...")
CONNECTION_LOGGER = "kafka.net.manager"
#: how the client's giving up on a bootstrap reads: it says nothing of why
_GENERIC = "Unable to bootstrap"
#: the client's own backoff, at the end of its failure lines: the daemon says its own
_BACKOFF = re.compile(r"\s*\(backoff [\d.]+ secs\)$")


#: the names (in ``kafka.errors``) of the errors that say the brokers could not be reached
_CONNECTION_ERRORS = ("KafkaConnectionError", "NodeNotReadyError", "KafkaTimeoutError")


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised once connected, says a broker could not be reached (a
    connection lost, a node not ready, a request that timed out), not that the brokers
    answered with an error (authorisation, an unknown topic, an incompatible version)."""
    from kafka import errors  # noqa: PLC0415 - kafka-python is imported lazily

    kinds = tuple(k for n in _CONNECTION_ERRORS if isinstance(k := getattr(errors, n, None), type))
    return isinstance(exc, kinds)


class KafkaOutage:
    """Reports an outage of the brokers ``brokers``: :meth:`failed` on every failed
    attempt (the first one logs an ERROR at once, later ones at most one line per
    ``every`` seconds), :meth:`recovered` once connected (one INFO line if an outage was
    reported). Durations in the lines are whole seconds written as the config writes them
    (:func:`monitor.config.format_duration`: ``"1m"``, ``"2m13s"``, ``"1h1m5s"``).
    :meth:`error` reports errors once connected that are not about reaching the brokers.
    ``status``, if given, gets a one-line summary at every failed attempt (the daemon's
    systemd ``STATUS=``: the outage shows there at the first refused connection, not when
    the client gives up its bootstrap 30 s later). Thread-safe: failures come from the
    client's IO thread too."""

    def __init__(
        self, brokers: Sequence[str], *, retry_max: float = 30.0, every: float = 60.0,
        clock: Callable[[], float] = time.monotonic, status: Callable[[str], object] | None = None,
    ) -> None:
        self.brokers = ", ".join(brokers)
        self.status = status
        self.retry_max = retry_max
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the outage began (None: no outage)
        self._said_at = 0.0
        self._reason = ""
        self._error = ""  # the last error reported by :meth:`error` ("" none yet)
        self._error_said_at = 0.0
        self._error_held = 0  # how many of it were held back since it was said

    @property
    def active(self) -> bool:
        with self._lock:
            return self._since is not None

    def failed(self, reason: str) -> None:
        now = self.clock()
        with self._lock:
            if not (_GENERIC in reason and self._reason):  # the giving up does not hide why
                self._reason = reason
            reason = self._reason
            first = self._since is None
            since = now if self._since is None else self._since
            if first:
                self._since = self._said_at = now
            due = first or now - self._said_at >= self.every
            if due:
                self._said_at = now
            down = now - since
        if self.status is not None:
            self.status(f"kafka: cannot connect to {self.brokers}: {reason}; retrying, not ready")
        if not due:
            return
        fields = {"event": "kafka_unreachable", "brokers": self.brokers, "reason": reason, "down_s": round(down)}
        if first:
            log.error(
                "kafka: cannot connect to %s: %s; retrying with backoff (at most %.0fs apart), not ready until then",
                self.brokers, reason, self.retry_max, extra=fields,
            )
        else:
            log.error(
                "kafka: %s still unreachable after %s: %s; still retrying",
                self.brokers, format_duration(timedelta(seconds=round(down))), reason, extra=fields,
            )

    def error(self, reason: str) -> None:
        """Kafka failed once connected, with an error that is not about reaching the brokers
        (:func:`is_connection_error` is false): one ERROR line ``kafka: <brokers>: <reason>``
        at once; the same reason again within ``every`` seconds of that line is held back,
        and the first one after it says how many there were since (``N more times in the
        last 1m2s``). A different reason is said at once. Not an outage: :attr:`active`
        stays as it was and :meth:`recovered` says nothing of it."""
        now = self.clock()
        with self._lock:
            if reason == self._error and now - self._error_said_at < self.every:
                self._error_held += 1
                return
            more = self._error_held + 1 if reason == self._error and self._error_held else 0
            since = now - self._error_said_at
            self._error, self._error_said_at, self._error_held = reason, now, 0
        fields = {"event": "kafka_error", "brokers": self.brokers, "reason": reason, "repeated": more}
        if more:
            log.error(
                "kafka: %s: %s; %d more times in the last %s, still reconnecting", self.brokers, reason, more,
                format_duration(timedelta(seconds=round(since))), extra=fields,
            )
        else:
            log.error(
                "kafka: %s: %s; reconnecting with backoff, not ready until then", self.brokers, reason,
                extra=fields,
            )

    def recovered(self) -> None:
        now = self.clock()
        with self._lock:
            since, self._since, self._reason = self._since, None, ""
        if since is not None:
            down = round(now - since)
            log.info(
                "kafka: %s reachable again after %s", self.brokers, format_duration(timedelta(seconds=down)),
                extra={"event": "kafka_reachable", "brokers": self.brokers, "down_s": down},
            )


class BootstrapWatch(logging.Handler):
    """While installed (a context manager), passes the client's connection failures to
    ``outage``: the WARNING and ERROR lines of :data:`CONNECTION_LOGGER` that say
    something failed ("Connection failed: ...", refused or TLS; "Bootstrap connection to
    bootstrap-0 failed: ...", which is the only one for a refused SASL login). Sees them
    whatever the log handlers' filters hold back, since it sits on the client's own logger."""

    def __init__(self, outage: KafkaOutage) -> None:
        super().__init__(level=logging.WARNING)
        self.outage = outage

    def emit(self, record: logging.LogRecord) -> None:
        if "failed" not in str(record.msg).lower():  # "not ready; waiting", "deprecated", ...
            return
        try:
            self.outage.failed(_BACKOFF.sub("", record.getMessage()))
        except Exception:  # noqa: BLE001 - a report must never break the client's IO loop
            self.handleError(record)

    def __enter__(self) -> BootstrapWatch:
        logging.getLogger(CONNECTION_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(CONNECTION_LOGGER).removeHandler(self)
