"""The HTTP API as a litestar application (served by uvicorn, see ``monitor.web.server``).

GET  / (the dashboard page, ``?model=``), /static/NAME (its script, styles, uPlot),
     /healthz, /readyz, /metrics (Prometheus exposition), /api/v1/models,
     /api/v1/models/{m}/windows[?segment=&limit=&metrics=1],
     /api/v1/models/{m}/windows/{id}/report (Evidently HTML; id: ``storage.records.window_url_id``),
     /api/v1/alerts[?state=&model=&rule=&limit=], /api/v1/silences[?limit=]
POST /api/v1/models/{m}/references?version=v13   body: CSV (text/csv) or Parquet
POST /api/v1/silences   JSON {"model", "rule", "until" | "duration", "comment", "created_by"}

Store reads and writes run in worker threads (``asyncio.to_thread``: a bounded
pool), never on the event loop. Mutations need ``Authorization: Bearer
<daemon.api_token>``, checked before a byte of the body is read (constant-time
compare); without a configured token they are refused (403), so an
unauthenticated daemon is read-only. With ``daemon.protect_reads`` every read but
``/healthz``, ``/readyz`` and ``/static/`` needs the token too.

Every error is ``{"error": "<short message>"}`` with a 4xx status for a client's
mistake (never a traceback, exception text or path); an unexpected failure is a
500 ``{"error": "internal error"}`` with the details in the (redacted) log; the store
away or refusing is a 503 with ``Retry-After``. ``/healthz`` is 503 once the consumer
loop has stalled (see ``Daemon.stalled_for``); ``/readyz`` also while Kafka or the
store is failing, naming a storage failure by its kind only (its text, which says where
the store is, goes to the log, and to a request with the token). During a storage failure the dashboard and ``/metrics`` show what
the daemon holds in memory without asking the store.
Limits: ``limit`` is clamped to 1..1000; JSON bodies to ``daemon.max_json_bytes``;
uploads to ``daemon.max_reference_bytes``; bodies must arrive within
``daemon.http_body_timeout``; a POST must declare its ``Content-Length``; dashboard
pages are built :data:`MAX_PAGES` at a time (:data:`MAX_PAGES_WAITING` more wait, others
get 503), ``/metrics`` expositions :data:`MAX_SCRAPES` at a time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler

from monitor.web.metrics import DaemonMetrics
from monitor.web.report_route import ReportRenderer
from monitor.web.requests import (
    ApiError,
    Turns,
    TurnsFull,
    clamp_limit,
    declared_length,
    guard_requests,
    loopback_hosts,
    receive_body,
)
from monitor.web.view import DaemonView
from storage.db import StorageError
from storage.finite import dumps_finite

log = logging.getLogger("driftwarden.http")

JSON = "application/json"
#: default ``limit`` of /windows (as before) and of the other lists (their whole size before)
WINDOWS_LIMIT, LIST_LIMIT = 100, 1000
#: /metrics expositions running at once (beyond: 503); each one reads the store
MAX_SCRAPES = 2
#: at most this many figures in one ``windows?metrics=1`` answer (~0.4 KB of JSON each): a
#: wide model's windows hold thousands each, and ``limit=1000`` of them made answers of
#: tens of MB (over a GB at 1,000 windows of 1,000 columns) built in the daemon's memory
MAX_METRIC_ROWS = 20_000
#: dashboard pages built at once, and more that may wait for a turn (beyond: 503); each
#: reads the store in a worker thread: a 1,000-column model's page took 2 s and ~240 MB,
#: and 10 at once 1.4 GB and every worker thread the API's reads need (an alerts read: 10 s)
MAX_PAGES, MAX_PAGES_WAITING = 2, 8
#: characters of the storage error's own text /readyz gives a token holder
MAX_DETAIL = 500


# -- plumbing ------------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[bytes]:
    # json.dumps(default=str): the same shapes (and datetime text) as before the framework
    return Response(
        content=dumps_finite(body, default=str).encode(), status_code=status, media_type=JSON, headers=headers
    )


def _daemon(request: Request[Any, Any, Any] | ASGIConnection[Any, Any, Any, Any]) -> DaemonView:
    return request.app.state.daemon  # type: ignore[no-any-return]


def _query(request: Request[Any, Any, Any], name: str) -> str | None:
    """The last value of a query parameter, as the hand-written server read it."""
    values = request.query_params.getall(name, [])
    return values[-1] if values else None


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return _json(exc.status, {"error": exc.message}, exc.headers or None)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    # litestar's own refusals: no route (404), wrong method (405), ...
    status = exc.status_code
    phrase = HTTPStatus(status).phrase
    message = phrase.lower() if not exc.detail or exc.detail == phrase else exc.detail
    if status >= 500:
        log.error("http: %s", exc.detail)
        message = "internal error"
    return _json(status, {"error": message})


def _storage_error(request: Request[Any, Any, Any], exc: StorageError) -> Response[bytes]:
    # the store away or refusing: a retry may work, nothing in the request is wrong; where
    # the database is stays in the log, not in an answer to whoever asked
    log.warning("http %s %s: %s", request.method, request.url.path, exc)
    return _json(503, {"error": "storage unavailable, try again later"}, {"Retry-After": "5"})


def _server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("http %s %s failed", request.method, request.url.path, exc_info=exc)
    return _json(500, {"error": "internal error"})


def require_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every mutation; runs before the handler, so before any body is read."""
    token = _daemon(connection).config.secret("daemon.api_token")
    if not token:
        raise ApiError(403, "mutations are disabled: set daemon.api_token_env or daemon.api_token_file")
    _check_bearer(connection, token)


def require_read_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every read: a no-op unless ``daemon.protect_reads`` (which requires a token)."""
    d = _daemon(connection).config
    if d.daemon.protect_reads:
        _check_bearer(connection, d.secret("daemon.api_token") or "")


def require_store(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the routes that need the store: 503 at once while it is failing (or the
    consumer loop is stalled on it), instead of tying up a worker thread on a wait that
    ends in the same answer. Runs after the token guards."""
    if _daemon(connection).store_suspect:
        raise ApiError(503, "storage unavailable, try again later", {"Retry-After": "5"})


def _holds_token(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the request carries the configured bearer token (False without one configured)."""
    token = _daemon(connection).config.secret("daemon.api_token")
    try:
        _check_bearer(connection, token or "")
    except ApiError:
        return False
    return True


def _check_bearer(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> None:
    got = connection.headers.get("authorization", "")
    if not token or not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), token.encode()):
        raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


# -- reads ---------------------------------------------------------------------------------


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Liveness: 503 once the consumer loop has not turned for ``stall_after`` seconds (a
    hung store call), so that an orchestrator restarts the process as systemd's watchdog would."""
    stalled = _daemon(request).stalled_for()
    if stalled is not None:
        return _json(503, {"status": "stalled", "stalled_seconds": round(stalled, 1)})
    return _json(200, {"status": "ok"})


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Readiness, open to anyone (a probe carries no token): ``storage_error`` is the
    failure's kind and a fixed phrase (:func:`storage.db.brief_reason`), never its text,
    which names the SQLite path or the PostgreSQL host, role and database.
    ``unclaimed_partitions``: the predictions partitions Kafka assigns here that are not
    claimed in the store (another instance holds them): not consumed. A request with
    the bearer token also gets that text, cut to :data:`MAX_DETAIL` characters, as
    ``storage_error_detail``; the log has it in full."""
    d = _daemon(request)
    ready = d.is_ready
    stalled = d.stalled_for()
    body: dict[str, Any] = {"ready": ready, "kafka": d.kafka_connected, "storage_error": d.storage_error_brief,
                            "stalled_seconds": None if stalled is None else round(stalled, 1),
                            "unclaimed_partitions": sorted(d.unclaimed_partitions())}
    detail = d.storage_error
    if detail is not None and _holds_token(request):
        body["storage_error_detail"] = detail[:MAX_DETAIL]
    return _json(200 if ready else 503, body)


@get("/metrics", guards=[require_read_token])
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    m: DaemonMetrics = request.app.state.metrics
    scrapes: asyncio.Semaphore = request.app.state.scrapes
    if scrapes.locked():
        # Prometheus scrapes one at a time (two for an HA pair): 20 at once took 47 s each,
        # 480 MB, the worker threads the API's reads need, and 14x the consumer's time
        raise ApiError(503, f"{MAX_SCRAPES} scrapes are running; try again later", headers={"Retry-After": "5"})
    async with scrapes:
        data, ctype = await asyncio.to_thread(m.exposition)
    return Response(content=data, status_code=200, media_type=ctype)


@get("/api/v1/models", guards=[require_read_token])
async def models(request: Request[Any, Any, Any]) -> Response[bytes]:
    out = []
    for name, rt in _daemon(request).pipeline.models.items():
        ref = rt.prepared.reference
        out.append({"name": name, "task": rt.config.task, "features": list(rt.schema.features),
                    "reference": {"path": str(ref.path), "sha256": ref.sha256, "rows": ref.rows,
                                  "version": rt.prepared.version},
                    "watermark_ms": rt.windows.event_watermark,
                    "open_windows": len(rt.windows.open)})
    return _json(200, {"models": out})


@get("/api/v1/models/{model:str}/windows", guards=[require_read_token, require_store])
async def windows(request: Request[Any, Any, Any]) -> Response[bytes]:
    from storage.records import window_url_id  # noqa: PLC0415
    from storage.windows import window_metrics, windows_with_verdicts  # noqa: PLC0415

    d, model = _daemon(request), request.path_params["model"]
    if model not in d.pipeline.models:
        raise ApiError(404, f"unknown model {model[:100]}")
    limit = clamp_limit(_query(request, "limit"), WINDOWS_LIMIT)
    segment, with_metrics = _query(request, "segment"), _query(request, "metrics") in ("1", "true")

    def read() -> bytes:
        rows = windows_with_verdicts(d.reads, model=model, segment=segment, limit=limit)
        for r in rows:
            r["url_id"] = window_url_id(r["id"])
            r["report"] = f"/api/v1/models/{model}/windows/{r['url_id']}/report"
        body: dict[str, Any] = {"windows": rows}
        if with_metrics:
            figures = 0
            for i, r in enumerate(rows):
                r["metrics"] = window_metrics(d.reads, r["id"])
                figures += len(r["metrics"])
                if figures > MAX_METRIC_ROWS and i > 0:  # the newest window is always whole
                    body = {"windows": rows[:i], "truncated": (
                        f"the {i} newest of the {len(rows)} windows asked for: with their figures they hold"
                        f" at most {MAX_METRIC_ROWS} figures in one answer; ask for fewer (limit) or"
                        " without metrics=1")}
                    break
        return dumps_finite(body, default=str).encode()  # off the event loop: it may be MBs

    return Response(content=await asyncio.to_thread(read), status_code=200, media_type=JSON)


@get("/api/v1/alerts", guards=[require_read_token, require_store])
async def alerts(request: Request[Any, Any, Any]) -> Response[bytes]:
    from storage.alerts import ALERT_STATES, list_alerts  # noqa: PLC0415

    limit = clamp_limit(_query(request, "limit"), LIST_LIMIT)
    state = _query(request, "state")
    if state is not None and state not in ALERT_STATES:  # a typo answered an empty list
        raise ApiError(400, f"query parameter state must be one of {', '.join(ALERT_STATES)}")
    rows = await asyncio.to_thread(
        list_alerts, _daemon(request).reads, state=state, model=_query(request, "model"),
        rule=_query(request, "rule"), limit=limit,
    )
    return _json(200, {"alerts": rows})


@get("/api/v1/silences", guards=[require_read_token, require_store])
async def silences(request: Request[Any, Any, Any]) -> Response[bytes]:
    from storage.alerts import list_silences  # noqa: PLC0415

    limit = clamp_limit(_query(request, "limit"), LIST_LIMIT)
    d = _daemon(request)
    rows = await asyncio.to_thread(lambda: list_silences(d.reads, limit=limit))
    now = d.clock()
    return _json(200, {"silences": [s.to_json(now) for s in rows]})


# -- the dashboard and reports ------------------------------------------------------------


#: files served under /static/ (read once) and their types
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}  # litestar adds "; charset=utf-8"
_STATIC_DIR = Path(__file__).parent / "static"
HTML_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    return {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix]) for p in _STATIC_DIR.iterdir() if p.suffix in STATIC_TYPES}


@get("/", guards=[require_read_token])
async def dashboard(request: Request[Any, Any, Any]) -> Response[bytes]:
    from monitor.web import dashboard as page  # noqa: PLC0415

    d = _daemon(request)
    model = _query(request, "model")
    if model is not None and model not in d.pipeline.models:
        raise ApiError(404, f"unknown model {model[:100]}")
    turns: Turns = request.app.state.pages
    try:
        async with turns.take():
            data = await asyncio.to_thread(page.gather, d, model)
            body = await asyncio.to_thread(lambda: page.render(data).encode())
    except TurnsFull:
        raise ApiError(503, "busy building other pages; try again shortly", {"Retry-After": "5"}) from None
    return Response(content=body, status_code=200, media_type="text/html",
                    headers={**HTML_HEADERS, "Content-Security-Policy": page.CSP})


@get("/static/{name:str}")
async def static(request: Request[Any, Any, Any]) -> Response[bytes]:
    files: dict[str, tuple[bytes, str]] = request.app.state.static
    got = files.get(request.path_params["name"])
    if got is None:
        raise ApiError(404, "no such file")
    return Response(content=got[0], status_code=200, media_type=got[1],
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"})


@get("/api/v1/models/{model:str}/windows/{wid:str}/report", guards=[require_read_token, require_store])
async def report(request: Request[Any, Any, Any]) -> Response[bytes]:
    from monitor.web.report_route import render_report  # noqa: PLC0415

    return await render_report(request, _daemon(request), request.path_params["model"], request.path_params["wid"])


# -- mutations -----------------------------------------------------------------------------


async def _read_json(request: Request[Any, Any, Any]) -> bytes:
    d = _daemon(request).config.daemon
    length = declared_length(request.headers, d.max_json_bytes)
    buf = bytearray()
    await receive_body(request.receive, length, d.http_body_timeout.total_seconds(), buf.extend)
    return bytes(buf)


@post("/api/v1/silences", guards=[require_token, require_store])
async def add_silence(request: Request[Any, Any, Any]) -> Response[bytes]:
    from monitor.web.silences import parse_silence  # noqa: PLC0415

    d = _daemon(request)
    body = await _read_json(request)
    s = parse_silence(body, now=d.clock(), models=d.pipeline.models.keys(),
                      rules=[r.name for r in d.config.rules])
    sid = await asyncio.to_thread(
        d.alerting.silence, model=s.model, rule=s.rule, until=s.until, created_by=s.created_by, comment=s.comment,
    )
    from storage.records import iso  # noqa: PLC0415

    # as stored and listed (UTC, milliseconds, Z), not the request's own offset and microseconds
    return _json(201, {"id": sid, "until": iso(s.until)})


@post("/api/v1/models/{model:str}/references", guards=[require_token, require_store])
async def register_reference(request: Request[Any, Any, Any]) -> Response[bytes]:
    from monitor.web.uploads import receive_reference  # noqa: PLC0415

    d, model = _daemon(request), request.path_params["model"]
    lock: asyncio.Lock = request.app.state.upload_lock
    body = await receive_reference(d, model, _query(request, "version"), request.headers, request.receive, lock)
    return _json(201, body)


# -- the application -----------------------------------------------------------------------


def create_app(daemon: DaemonView, metrics_: DaemonMetrics) -> Callable[..., Any]:
    """The ASGI application for one daemon (routes above, errors as JSON, bodies guarded)."""
    app = Litestar(
        route_handlers=[healthz, readyz, metrics, models, windows, alerts, silences, add_silence,
                        register_reference, dashboard, static, report],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, StorageError: _storage_error,
                            Exception: _server_error},
        state=State({"daemon": daemon, "metrics": metrics_, "upload_lock": asyncio.Lock(), "scrapes": asyncio.Semaphore(MAX_SCRAPES),
                     "pages": Turns(MAX_PAGES, MAX_PAGES_WAITING),
                     "static": _static_files(), "reports": ReportRenderer()}),
        openapi_config=None,
        logging_config=None,
        debug=False,
        # bodies are read by receive_body with their own caps; this is a backstop
        request_max_body_size=daemon.config.daemon.max_json_bytes,
    )
    d = daemon.config.daemon
    return guard_requests(app, max_requests=d.http_max_connections, max_client_requests=d.client_connection_cap,
                          hosts=loopback_hosts(d.listen_address[0], d.public_url))

