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


def test_secrets_added_by_a_reload_are_redacted_too() -> None:
    from pydantic import SecretStr

    from monitor.logs import add_secrets, setup_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        setup_logging("info", "text", secrets={"old": SecretStr(SECRET)})
        out = io.StringIO()
        root.handlers[0].setStream(out)  # type: ignore[attr-defined]
        add_secrets({"notifiers.slack.token": SecretStr("xoxb-rotated-token-456")})
        logging.getLogger("reload-test").warning("old %s new %s", SECRET, "xoxb-rotated-token-456")
        assert out.getvalue().rstrip().endswith("reload-test: old *** new ***")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
