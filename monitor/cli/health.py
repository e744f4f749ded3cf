"""``driftwarden healthcheck``: ask a running daemon's ``/healthz`` (the container HEALTHCHECK).

The address comes from the same config the daemon reads (file plus ``DRIFTWARDEN_*``
overrides), so overriding the listen address moves the probe with it. A wildcard
listener (``0.0.0.0``, ``::``) is probed on the loopback address of its family.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from monitor.config import Config


def healthz_url(cfg: Config) -> str:
    host, port = cfg.daemon.listen_address
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
