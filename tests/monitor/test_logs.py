"""Secrets never reach a log line, including tracebacks."""

from __future__ import annotations

import io
import logging

from monitor.logs import JsonFormatter, RedactingFilter

SECRET = "xoxb-very-secret-token-123"


def _logger(fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    h = logging.StreamHandler(out)
    h.setFormatter(fmt)
    h.addFilter(RedactingFilter([SECRET]))
    log = logging.getLogger(f"redact-{id(out)}")
    log.handlers[:] = [h]
    log.propagate = False
    return log, out


def test_message_args_and_traceback_are_redacted() -> None:
    for fmt in (logging.Formatter("%(message)s"), JsonFormatter()):
        log, out = _logger(fmt)
        log.warning("token is %s", SECRET)
        try:
            raise ValueError(f"bad auth with {SECRET}")
        except ValueError:
            log.exception("failed")
        text = out.getvalue()
        assert SECRET not in text
        assert text.count("***") >= 2
        assert "ValueError: bad auth with ***" in text
