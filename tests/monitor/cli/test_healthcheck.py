"""``driftwarden healthcheck`` (the container HEALTHCHECK) asks the running daemon, whatever
has happened to the config file since the daemon read it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.demo.broker import free_port
from tests.monitor.daemon_helpers import run_cli, write_config


@pytest.fixture
def healthz() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 answering /healthz 200, as a running daemon does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_config_edited_into_an_invalid_one_still_probes_the_daemon(tmp_path: Path, healthz: int) -> None:
    """A reload refused for a typo keeps the daemon running and /healthz 200; the probe
    exited 2 (invalid config), so the container was marked unhealthy."""
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=healthz)
    cfg.write_text(cfg.read_text().replace("[daemon]", "[daemon]\nthreshhold = 1", 1))
    res = run_cli("healthcheck", "-c", str(cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == f"http://127.0.0.1:{healthz}/healthz: 200"
    # nothing listening: unhealthy, status 1 (Docker reserves 2)
    cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{healthz}", f"127.0.0.1:{free_port()}"))
    res = run_cli("healthcheck", "-c", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no answer" in res.stderr
