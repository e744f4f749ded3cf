"""SASL/OAUTHBEARER tokens for kafka-python 3 (cloud IAM, OIDC), from a file or a command.

kafka-python asks its ``sasl_oauth_token_provider`` for a token at every (re)authentication
(each new connection, and each KIP-368 re-authentication before the broker's session
lifetime ends), so a provider that hands out a fresh token is all "refresh" needs:

- **file** (``kafka.sasl_oauth_token_file``): the file's content, stripped. It is re-read
  whenever its modification time or size changes, so a sidecar or agent that rewrites
  it (Kubernetes projected service-account tokens, Vault agent) rotates the token.
- **command** (``kafka.sasl_oauth_token_command``, an argv list, run without a shell):
  its stdout is the token, or a JSON object with ``access_token`` (and optionally
  ``expires_in`` seconds, as OAuth token endpoints answer). The token is reused until
  80% of its lifetime has passed: ``expires_in``, else a JWT's ``exp`` claim, else
  ``kafka.sasl_oauth_token_ttl``. A failing command (exit status, timeout, empty output)
  is logged without its output; the previous token is used while it is still valid.

Tokens never appear in log lines or error messages.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kafka.net.sasl.oauth import AbstractTokenProvider

log = logging.getLogger("driftwarden.oauth")

#: seconds a token command may run
COMMAND_TIMEOUT = 30.0
#: a token is replaced once this share of its lifetime has passed
REFRESH_AT = 0.8


class TokenError(RuntimeError):
    """No usable token (the message never holds one)."""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying; None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _parse_output(out: str) -> tuple[str, float | None]:
    """(token, lifetime in seconds if the output says) from a command's stdout."""
    text = out.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise TokenError("token command printed invalid JSON") from None
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise TokenError('token command printed JSON without a string "access_token"')
        expires = doc.get("expires_in")
        lifetime = float(expires) if isinstance(expires, int | float) and not isinstance(expires, bool) else None
        return token.strip(), lifetime
    if not text or any(c.isspace() for c in text):
        raise TokenError("token command printed no token (expected one line, or JSON with access_token)")
    return text, None


class TokenProvider(AbstractTokenProvider):
    """kafka-python's token provider over a file or a command; thread-safe."""

    def __init__(
        self,
        *,
        file: Path | None = None,
        command: Sequence[str] | None = None,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """``clock``: the wall clock (epoch seconds), read only to turn a JWT's ``exp`` into a
        lifetime; ``monotonic``: the seconds the reuse deadlines are kept on, so that a wall
        clock stepped back does not keep an expired token in use for the step."""
        super().__init__()
        if (file is None) == (command is None):
            raise ValueError("give a token file or a token command")
        self.file = file
        self.command = list(command) if command is not None else None
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self.timeout = timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0  # monotonic seconds after which the token is not used
        self._refresh = 0.0  # monotonic seconds after which a new one is fetched
        self._file_stamp: tuple[float, int] | None = None
        #: how many times a token was fetched (read or command run): for tests and logs
        self.fetches = 0

    def token(self) -> str:
        with self._lock:
            if self.file is not None:
                return self._from_file()
            return self._from_command()

    def extensions(self) -> dict[str, Any]:
        return {}

    # -- sources --------------------------------------------------------------------------

    def _from_file(self) -> str:
        assert self.file is not None
        try:
            st = self.file.stat()
            stamp = (st.st_mtime, st.st_size)
            if self._token is not None and stamp == self._file_stamp:
                return self._token
            text = self.file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            if self._token is not None:
                log.warning("kafka.sasl_oauth_token_file %s unreadable (%s): using the previous token",
                            self.file, type(exc).__name__)
                return self._token
            raise TokenError(f"kafka.sasl_oauth_token_file {self.file}: cannot read it ({exc})") from None
        if not text:
            if self._token is not None:
                return self._token
            raise TokenError(f"kafka.sasl_oauth_token_file {self.file} is empty")
        self.fetches += 1
        self._token, self._file_stamp = text, stamp
        return text

    def _from_command(self) -> str:
        assert self.command is not None
        mono = self.monotonic()
        if self._token is not None and mono < self._refresh:
            return self._token
        try:
            token, lifetime = self._run()
        except TokenError as exc:
            if self._token is not None and mono < self._expires:
                log.warning("%s; using the previous token until it expires", exc)
                return self._token
            raise
        if lifetime is None:
            exp = jwt_expiry(token)
            lifetime = exp - self.clock() if exp is not None else self.ttl
        lifetime = max(lifetime, 1.0)
        self.fetches += 1
        self._token = token
        self._expires = mono + lifetime
        self._refresh = mono + lifetime * REFRESH_AT
        return token

    def _run(self) -> tuple[str, float | None]:
        assert self.command is not None
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        name = self.command[0]
        try:
            res = subprocess.run(  # noqa: S603 - the operator's configured command, no shell
                self.command, capture_output=True, text=True, timeout=self.timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise TokenError(f"kafka.sasl_oauth_token_command {name}: no answer within {self.timeout:.0f}s") from None
        except OSError as exc:
            raise TokenError(f"kafka.sasl_oauth_token_command {name}: cannot run it ({exc.strerror or exc})") from None
        if res.returncode != 0:
            # stderr may quote the token or a client secret: report only its size
            raise TokenError(
                f"kafka.sasl_oauth_token_command {name}: exit status {res.returncode}"
                f" ({len(res.stderr)} bytes on stderr, not shown)"
            )
        try:
            return _parse_output(res.stdout)
        except TokenError as exc:
            raise TokenError(f"kafka.sasl_oauth_token_command {name}: {exc}") from None
