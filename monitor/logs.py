"""Logging set-up: text or JSON lines, with every configured secret redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


class RedactingFilter(logging.Filter):
    """Replaces every secret value in a record's final message with ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg, record.args = self.redact(record.getMessage()), None
            if record.exc_info:
                # tracebacks quote arguments and locals' reprs: redact the rendered text
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
        return True

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text


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
        return json.dumps(out)


def setup_logging(level: str, fmt: str, *, secrets: Mapping[str, Any] | None = None) -> None:
    """Log lines to stderr for people (``text``), JSON lines to stdout for collectors
    (``json``: what container runtimes and log shippers read)."""
    handler = logging.StreamHandler(sys.stdout if fmt == "json" else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    values = [s.get_secret_value() if hasattr(s, "get_secret_value") else str(s) for s in (secrets or {}).values()]
    handler.addFilter(RedactingFilter(values))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def add_secrets(secrets: Mapping[str, Any]) -> None:
    """Redact these secrets too, in every handler :func:`setup_logging` installed (a config
    reload may bring a rotated token; the old one stays redacted as well)."""
    values = [s.get_secret_value() if hasattr(s, "get_secret_value") else str(s) for s in secrets.values()]
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RedactingFilter):
                f.secrets = sorted({*f.secrets, *(v for v in values if v)}, key=len, reverse=True)
