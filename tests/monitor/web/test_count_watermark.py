"""A count-window model has no event-time watermark: ``/metrics`` and ``/api/v1/models``
show none for it, as for a time model before its clock exists."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import load_config
from monitor.demo.broker import free_port
from monitor.service.daemon import Daemon
from monitor.web.server import ApiServer
from tests.monitor.daemon_helpers import stream, write_config
from tests.monitor.fault_helpers import shaped
from tests.monitor.web.http_helpers import TOKEN, TOKEN_ENV, http, wait_serving
from tests.monitor.web.seed_helpers import START, feed


def test_a_count_model_exports_no_watermark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Count windows keep an event clock (a replay stamps their windows by it), but their
    watermark never moves: exported, it read -2.3e15 s (a lag of 73 million years on a
    dashboard computing time() - watermark)."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    port = free_port()
    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=port,
                        daemon_extra=f'api_token_env = "{TOKEN_ENV}"')
    path.write_text(shaped(path.read_text(), "count"))
    daemon = Daemon(load_config(path), http=False)
    server = ApiServer(daemon)
    try:
        feed(daemon, stream(2, 300, 9), close_at_ms=int(START.timestamp() * 1000) + 3 * 60_000)
        assert daemon.pipeline.models["churn"].windows.max_ts is not None  # the clock exists
        server.start()
        assert wait_serving(server.port)
        r = http(server.port, "GET", "/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
        assert [s.labels for s in fams["driftwarden_watermark_seconds"].samples] == []
        models = orjson.loads(http(server.port, "GET", "/api/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).body)["models"]
        assert [m["watermark_ms"] for m in models] == [None]
    finally:
        server.stop()
        daemon.close()
