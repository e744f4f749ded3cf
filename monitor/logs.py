"""Logging set-up: text or JSON lines, with every configured secret redacted.

Structured fields: a line logged with ``extra={"event": "window_closed", "model": …}``
keeps them as top-level keys in the JSON format (beside ``ts``, ``level``, ``logger``,
``msg``, which they never overwrite); the text format shows the message only.
Secrets are redacted from the message, tracebacks and every string in those fields.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from monitor.log_repeats import RepeatFilter
from storage import redaction
from storage.text import escape_controls

#: attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Replaces every secret value in a record's final message, its traceback and the
    strings of its ``extra=`` fields with ``***``: its own ``secrets``, and what the
    process registered for every text it stores (:mod:`storage.redaction`: the config's
    secrets, each notifier's receiver URL by its parts), the same way."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets or redaction.registered():
            record.msg, record.args = self.redact(record.getMessage()), None
            if record.exc_info:
                # tracebacks quote arguments and locals' reprs: redact the rendered text
                record.exc_text = self.redact(format_exception(record.exc_info))
                record.exc_info = None
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
            for key, value in record_fields(record).items():
                setattr(record, key, self._redact_value(value))
        return True

    def _redact_value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if depth > 5:
            return value
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self._redact_value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v, depth + 1) for v in value]
        return value

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return redaction.redact(text)


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: message``, the message with control characters escaped
    (:func:`storage.text.escape_controls`): whatever a call passed in, from the stream or
    an HTTP client, one record is one line. A traceback follows on its own lines, each
    escaped the same way (an exception's message may quote a value from the stream)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text:  # rendered already (by RedactingFilter): escaped here (idempotent)
            record.exc_text = _escape_lines(record.exc_text)
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return format_exception(ei)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _escape_lines(super().formatStack(stack_info))


def _escape_lines(text: str) -> str:
    """``text`` with control characters escaped in each line, its line breaks kept."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


#: how the chunks of a traceback that are not an exception's own text begin
_TRACEBACK_FRAMES = ("Traceback (most recent call last)", "  ", "\nThe above exception", "\nDuring handling")


def format_exception(ei: Any) -> str:
    """A traceback as :class:`logging.Formatter` writes it, but each exception's own text
    (``ValueError: <message>``, which may quote a value from the stream) on one line with
    its line breaks and control characters escaped, so it cannot pass for log lines."""
    import traceback  # noqa: PLC0415

    out = []
    for chunk in traceback.TracebackException(*ei).format(chain=True):
        if chunk.startswith(_TRACEBACK_FRAMES):
            out.append(_escape_lines(chunk))
        else:
            out.append(escape_controls(chunk.removesuffix("\n")) + "\n")  # the message's own breaks escaped
    return "".join(out).rstrip("\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        for key, value in record_fields(record).items():
            out.setdefault(key, value)
        return json.dumps(out, default=str)


def setup_logging(level: str, fmt: str, *, secrets: Mapping[str, Any] | None = None) -> None:
    """Log lines to stderr for people (``text``), JSON lines to stdout for collectors
    (``json``: what container runtimes and log shippers read)."""
    handler = logging.StreamHandler(sys.stdout if fmt == "json" else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    values = [s.get_secret_value() if hasattr(s, "get_secret_value") else str(s) for s in (secrets or {}).values()]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    handler.addFilter(RedactingFilter(values))  # marks the handler as ours for apply_log_level
    apply_log_level(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    sched = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, SkippedRunFilter) for f in sched.filters):
        sched.addFilter(SkippedRunFilter())


def apply_log_level(level: str) -> None:
    """Set ``daemon.log_level`` (at start-up and on reload): the root logger's level, and the
    same threshold on the root's handlers.

    The ``kafka`` loggers stay at WARNING whatever the level (never below: the client's
    INFO and DEBUG lines are its own chatter): their connection warnings must still be
    *made* at ``error``, because the daemon learns of a refused connection from them
    (:class:`monitor.service.kafka_outage.BootstrapWatch`); the handlers' threshold keeps
    them off the output there. Records propagate to the root's handlers without the root
    logger's own level being asked, so the threshold has to be on the handlers.

    Above ``debug`` the handlers :func:`setup_logging` installed (those with a
    :class:`RedactingFilter`) collapse kafka-python's repeated lines (a
    :class:`~monitor.log_repeats.RepeatFilter`, placed before the redaction, which then
    sees the line it writes); at ``debug`` every line shows, so the filter is removed.
    Start-up and a reload both come here, so a reload to or from ``debug`` ends as a
    start at that level would. A reload between two levels above ``debug`` keeps the
    filter and what it has counted."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    collapse = root.level > logging.DEBUG
    for handler in root.handlers:
        handler.setLevel(root.level)
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            continue  # not ours (a test's capture handler, say)
        repeats = [f for f in handler.filters if isinstance(f, RepeatFilter)]
        if collapse and not repeats:
            # kafka-python's per-attempt lines while a broker is away: each kind once a minute
            first = next(i for i, f in enumerate(handler.filters) if isinstance(f, RedactingFilter))
            # a new list, swapped in at once: other threads log meanwhile, and logging walks
            # the list without a lock; an insert or a removal in place shifted the redaction
            # filter under a thread that had just passed this one, and its line went out
            # with secrets in clear
            handler.filters = [*handler.filters[:first], RepeatFilter(("kafka",)), *handler.filters[first:]]
        elif not collapse and repeats:
            handler.filters = [f for f in handler.filters if not isinstance(f, RepeatFilter)]
    logging.getLogger("kafka").setLevel(logging.WARNING)


class SkippedRunFilter(logging.Filter):
    """Drops APScheduler's warning that a run was skipped because the previous one is
    still running: every job runs with ``max_instances=1`` on purpose, and while the
    store is away each job waits on it, so the warning came every second per job and
    buried the one line that says what is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


def add_secrets(secrets: Mapping[str, Any]) -> None:
    """Redact these secrets too, in every handler :func:`setup_logging` installed (a config
    reload may bring a rotated token; the old one stays redacted as well)."""
    values = [s.get_secret_value() if hasattr(s, "get_secret_value") else str(s) for s in secrets.values()]
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RedactingFilter):
                f.secrets = sorted({*f.secrets, *(v for v in values if v)}, key=len, reverse=True)


@contextlib.contextmanager
def logged_warnings(logger: str, into: list[str] | None) -> Iterator[None]:
    """Append to ``into`` the message of every WARNING (or worse) ``logger`` (or a logger
    below it) logs inside the block, from this thread only (another thread's lines, e.g.
    the pipeline's while an upload loads on an HTTP worker, are not this block's); nothing
    when ``into`` is None. The records still reach the log as well, as far as its level
    lets them: at ``daemon.log_level = "error"`` the logger is lowered to WARNING inside the
    block (else no such record is made at all) and the root's handlers, at ERROR, still
    leave them out. Not for two threads on one logger at once (an upload holds its lock)."""
    if into is None:
        yield
        return
    me = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me:
                into.append(record.getMessage())

    target = logging.getLogger(logger)
    handler = _Collect(logging.WARNING)
    level = target.level
    if target.getEffectiveLevel() > logging.WARNING:
        target.setLevel(logging.WARNING)
    target.addHandler(handler)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
