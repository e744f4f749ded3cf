"""``driftwarden healthcheck``: ask a running daemon's ``/healthz`` (the container HEALTHCHECK).

The address comes from the same config the daemon reads (file plus ``DRIFTWARDEN_*``
overrides), so overriding the listen address moves the probe with it. A wildcard
listener (``0.0.0.0``, ``::``) is probed on the loopback address of its family.
"""

from __future__ import annotations

import os
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from monitor.config import Config, DaemonConfig, apply_env_overrides


def listen_of(path: Path) -> DaemonConfig:
    """The listen address of a config file that does not validate (edited since the daemon
    read it: a reload was refused and the daemon runs on): ``daemon.http_listen`` from
    ``DRIFTWARDEN_DAEMON__HTTP_LISTEN`` or the file, read alone, else the default. The
    probe asks the daemon, not the file: a bad edit must not make a running daemon look
    unhealthy. ``ValueError`` when that address itself is unusable."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        doc = {}
    # the loader's own override rule (names match case-insensitively, ...); an override
    # that is itself a problem leaves the file's value
    doc, _origins, _problems = apply_env_overrides(doc, os.environ)
    daemon = doc.get("daemon", {})
    listen = daemon.get("http_listen") if isinstance(daemon, dict) else None
    return DaemonConfig() if listen is None else DaemonConfig(http_listen=listen)


def healthz_url(cfg: Config | DaemonConfig) -> str:
    daemon = cfg.daemon if isinstance(cfg, Config) else cfg
    host, port = daemon.listen_address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """(healthy, one line saying what was seen)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback URL
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return False, f"{url}: no answer ({reason})"
