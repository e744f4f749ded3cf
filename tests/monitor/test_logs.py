"""Secrets never reach a log line, including tracebacks."""

from __future__ import annotations

import io
import logging

from monitor.logs import JsonFormatter, RedactingFilter, TextFormatter

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


def test_json_lines_keep_extra_fields_and_redact_them() -> None:
    import json

    log, out = _logger(JsonFormatter())
    log.setLevel(logging.INFO)
    log.info("window closed: model=%s", "churn", extra={
        "event": "window_closed", "model": "churn", "rows": 300, "drift_share": 0.6,
        "drifted_columns": [{"column": "age", "score": 0.8}], "error": f"auth {SECRET}",
        "nested": {"token": SECRET, "list": [SECRET, 1]}, "level": "cannot overwrite", "logger": "nor this",
    })
    doc = json.loads(out.getvalue())
    assert doc["msg"] == "window closed: model=churn" and doc["level"] == "info" and doc["logger"].startswith("redact-")
    assert (doc["event"], doc["model"], doc["rows"], doc["drift_share"]) == ("window_closed", "churn", 300, 0.6)
    assert doc["drifted_columns"] == [{"column": "age", "score": 0.8}]
    assert doc["error"] == "auth ***" and doc["nested"] == {"token": "***", "list": ["***", 1]}
    assert SECRET not in out.getvalue()


def test_text_lines_show_the_message_only() -> None:
    log, out = _logger(logging.Formatter("%(levelname)s %(message)s"))
    log.setLevel(logging.INFO)
    log.info("window closed", extra={"event": "window_closed", "model": "churn"})
    assert out.getvalue() == "INFO window closed\n"


def test_a_text_line_cannot_be_forged_or_drive_the_terminal() -> None:
    # a version from the stream, as an HTTP client's report request put it in a log line
    hostile = "v9\r\x1b[2K2026-11-29 05:00:00 INFO driftwarden.pipeline: all good\u2028\n"
    log, out = _logger(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    log.warning("report of window %s rendered", hostile)
    try:
        raise ValueError(f"boom {hostile}")  # an exception's message may quote the stream too
    except ValueError:
        log.exception("failed for %s", "a\nb")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(
        ": report of window v9\\r\\x1b[2K2026-11-29 05:00:00 INFO driftwarden.pipeline: all good\\u2028\\n rendered")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert lines[1].endswith(": failed for a\\nb")
    # the traceback keeps its own lines, escaped the same way (through the redacting
    # filter, which renders it before the formatter, and without it)
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom v9\\r\\x1b[2K2026-11-29 05:00:00 INFO driftwarden.pipeline: all good\\u2028\\n"
    plain = io.StringIO()
    h = logging.StreamHandler(plain)
    h.setFormatter(TextFormatter("%(message)s"))
    bare = logging.getLogger("no-filter")
    bare.handlers[:] = [h]
    bare.propagate = False
    try:
        raise ValueError(f"boom {hostile}")
    except ValueError:
        bare.exception("failed")
    assert "\x1b" not in plain.getvalue() and "\r" not in plain.getvalue()
    assert plain.getvalue().splitlines()[-1] == lines[-1]


def test_a_scheduler_run_skipped_while_the_last_one_runs_is_not_logged() -> None:
    """A real BackgroundScheduler whose job outlasts its interval (as the outbox does
    while the store is away) logs no "skipped" warning once logging is set up; its other
    warnings still come through."""
    import threading
    import time

    from apscheduler.schedulers.background import BackgroundScheduler

    from monitor.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    try:
        setup_logging("INFO", "text")
        root.addHandler(Keep())
        release = threading.Event()
        sched = BackgroundScheduler()
        sched.add_job(lambda: release.wait(2), "interval", seconds=0.2, max_instances=1, coalesce=True)
        sched.start()
        time.sleep(1.2)
        release.set()
        sched.shutdown(wait=True)
        logging.getLogger("apscheduler.scheduler").warning("something else")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert not [m for m in seen if "skipped" in m], seen
    assert "something else" in seen


def test_a_level_change_swaps_the_handlers_filters_never_edits_them_in_place() -> None:
    """Other threads log while a reload changes the level, and logging walks a handler's
    filter list without a lock: an insert or removal in place shifted the redaction filter
    under a thread that had just passed the repeat filter, and that line went out with its
    secrets in clear. The list a thread may be walking must stay as it was."""
    from monitor.logs import apply_log_level, setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("kafka").level
    try:
        setup_logging("info", "text", secrets={"pw": "hunter2"})
        (handler,) = root.handlers
        walking = handler.filters
        before = list(walking)
        apply_log_level("debug")  # the repeat filter goes
        assert walking == before and handler.filters is not walking
        assert [type(f).__name__ for f in handler.filters] == ["RedactingFilter"]
        walking = handler.filters
        apply_log_level("warning")  # and comes back, before the redaction
        assert walking == [f for f in walking if type(f).__name__ == "RedactingFilter"]
        assert [type(f).__name__ for f in handler.filters] == ["RepeatFilter", "RedactingFilter"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("kafka").setLevel(saved[2])
