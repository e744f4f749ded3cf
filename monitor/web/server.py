"""The daemon's HTTP interface (default 127.0.0.1:9308).

GET  /healthz, /readyz, /metrics (Prometheus exposition), /api/v1/models,
     /api/v1/models/{m}/windows, /api/v1/alerts, /api/v1/silences
POST /api/v1/models/{m}/references   body: CSV (text/csv) or Parquet; ?version=v13
POST /api/v1/silences                JSON {"model", "rule", "until" | "duration", "comment", "created_by"}
Mutations need ``Authorization: Bearer <daemon.api_token>``; without a configured
token they are refused (403), so an unauthenticated daemon is read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from monitor.web.view import DaemonView

log = logging.getLogger("driftwarden.http")

MAX_BODY = 512 * 1024 * 1024


class ApiServer:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        host, _, port = daemon.config.daemon.http_listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        from monitor.web.metrics import DaemonMetrics  # noqa: PLC0415

        self.metrics = DaemonMetrics(daemon)

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server._dispatch(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                server._dispatch(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("%s " + format, self.address_string(), *args)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- routing ------------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if method == "GET":
                status, body, ctype = self._get(parts, query)
            else:
                status, body, ctype = self._post(h, parts, query)
        except Exception as exc:  # noqa: BLE001
            log.exception("http %s %s failed", method, url.path)
            status, body, ctype = 500, {"error": f"{type(exc).__name__}: {exc}"}, "application/json"
        payload = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _get(self, parts: list[str], q: dict[str, str]) -> tuple[int, Any, str]:
        d = self.daemon
        j = "application/json"
        if parts == ["healthz"]:
            return 200, {"status": "ok"}, j
        if parts == ["readyz"]:
            ready = d.ready.is_set() and d.kafka_connected and d.storage_error is None
            body = {"ready": ready, "kafka": d.kafka_connected, "storage_error": d.storage_error}
            return (200 if ready else 503), body, j
        if parts == ["metrics"]:
            data, ctype = self.metrics.exposition()
            return 200, data, ctype
        if parts[:2] != ["api", "v1"]:
            return 404, {"error": "not found"}, j
        rest = parts[2:]
        from storage.windows import window_metrics, windows_with_verdicts  # noqa: PLC0415

        if rest == ["models"]:
            out = []
            for name, rt in d.pipeline.models.items():
                ref = rt.prepared.reference
                out.append({"name": name, "task": rt.config.task, "features": list(rt.schema.features),
                            "reference": {"path": str(ref.path), "sha256": ref.sha256, "rows": ref.rows,
                                          "version": rt.prepared.version},
                            "watermark_ms": rt.windows.watermark if rt.windows.max_ts is not None else None,
                            "open_windows": len(rt.windows.open)})
            return 200, {"models": out}, j
        if len(rest) == 3 and rest[0] == "models" and rest[2] == "windows":
            if rest[1] not in d.pipeline.models:
                return 404, {"error": f"unknown model {rest[1]}"}, j
            rows = windows_with_verdicts(
                d.store, model=rest[1], segment=q.get("segment"), limit=int(q.get("limit", 100))
            )
            if q.get("metrics") in ("1", "true"):
                for r in rows:
                    r["metrics"] = window_metrics(d.store, r["id"])
            return 200, {"windows": rows}, j
        if rest == ["alerts"]:
            from storage.alerts import list_alerts  # noqa: PLC0415

            rows = list_alerts(d.store, state=q.get("state"), model=q.get("model"))
            if "rule" in q:
                rows = [r for r in rows if r["rule"] == q["rule"]]
            return 200, {"alerts": rows}, j
        if rest == ["silences"]:
            from dataclasses import asdict  # noqa: PLC0415

            from storage.alerts import list_silences  # noqa: PLC0415

            return 200, {"silences": [asdict(s) for s in list_silences(d.store)]}, j
        return 404, {"error": "not found"}, j

    def _authorised(self, h: BaseHTTPRequestHandler) -> tuple[int, str] | None:
        token = self.daemon.config.secret("daemon.api_token")
        if not token:
            return 403, "mutations are disabled: set daemon.api_token_env or daemon.api_token_file"
        got = h.headers.get("Authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), token.encode()):
            return 401, "missing or wrong bearer token"
        return None

    def _post(self, h: BaseHTTPRequestHandler, parts: list[str], q: dict[str, str]) -> tuple[int, Any, str]:
        j = "application/json"
        length = int(h.headers.get("Content-Length") or 0)
        denied = self._authorised(h)
        if denied is not None:
            if length and length <= MAX_BODY:
                h.rfile.read(length)
            return denied[0], {"error": denied[1]}, j
        if length > MAX_BODY:
            return 413, {"error": f"body larger than {MAX_BODY} bytes"}, j
        body = h.rfile.read(length) if length else b""
        rest = parts[2:] if parts[:2] == ["api", "v1"] else None
        if rest and len(rest) == 3 and rest[0] == "models" and rest[2] == "references":
            return self._register_reference(rest[1], body, h.headers.get("Content-Type", ""), q)
        if rest == ["silences"]:
            return self._silence(body)
        return 404, {"error": "not found"}, j

    def _register_reference(self, model: str, body: bytes, ctype: str, q: dict[str, str]) -> tuple[int, Any, str]:
        j = "application/json"
        d = self.daemon
        if model not in d.pipeline.models:
            return 404, {"error": f"unknown model {model}"}, j
        if not body:
            return 400, {"error": "empty body: send the reference data as CSV or Parquet"}, j
        version = q.get("version") or ""
        if not version or not all(c.isalnum() or c in "._-" for c in version):
            return 400, {"error": "query parameter version is required (letters, digits, . _ -)"}, j
        ext = ".parquet" if ("parquet" in ctype or body[:4] == b"PAR1") else ".csv"
        sha = hashlib.sha256(body).hexdigest()
        folder = Path(d.config.daemon.state_dir) / "references" / model
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{version}-{sha[:12]}{ext}"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
        from monitor.references.load import ReferenceError  # noqa: PLC0415

        try:
            pm = d.pipeline.swap_reference(model, str(path), version)
        except ReferenceError as exc:
            path.unlink(missing_ok=True)
            return 422, {"error": str(exc)}, j
        log.info("model %s: now monitored against reference %s (%s rows)", model, version, pm.reference.rows)
        return 201, {"model": model, "version": version, "sha256": sha, "rows": pm.reference.rows}, j

    def _silence(self, body: bytes) -> tuple[int, Any, str]:
        j = "application/json"
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "body must be JSON"}, j
        if not isinstance(req, dict):
            return 400, {"error": "body must be a JSON object"}, j
        from monitor.config import parse_duration  # noqa: PLC0415

        now = self.daemon.clock()
        try:
            if "until" in req:
                until = datetime.fromisoformat(str(req["until"]).replace("Z", "+00:00")).astimezone(UTC)
            elif "duration" in req:
                until = now + parse_duration(req["duration"])
            else:
                return 400, {"error": 'give "until" (RFC 3339) or "duration" (like "2h")'}, j
        except Exception as exc:  # noqa: BLE001
            return 400, {"error": f"bad until/duration: {exc}"}, j
        sid = self.daemon.alerting.silence(
            model=req.get("model"), rule=req.get("rule"), until=until,
            created_by=str(req.get("created_by", "")), comment=str(req.get("comment", "")),
        )
        return 201, {"id": sid, "until": until.isoformat()}, j
