"""``GET /api/v1/models/{m}/windows/{id}/report``: a stored window's Evidently report.

``{id}`` is the URL-safe window id (:func:`storage.records.window_url_id`: base64url
of the id, no padding), as the API's window list (``url_id``, ``report``), the
dashboard and notification links give it.

- 400: ``{id}`` is not such an id; 404: unknown model, the id names another model,
  or no such window; 410: the window's sample is gone (only the newest
  ``[reports] sample_windows`` windows per model keep one) or was never kept;
  409: no reference data to compare with.
- One report is rendered at a time, in a worker thread (Evidently: about a second,
  plus several seconds to import it for the first report after start-up); at most
  :data:`MAX_WAITING` requests are in, the one rendering included (the others wait for
  their turn), others get 503 with ``Retry-After``. The last :data:`CACHE_SIZE` reports are kept in memory.
- Errors are the API's JSON ``{"error": …}``, or a short HTML page when the client
  asks for ``text/html`` (a browser following a link from Slack).
- The page is served with ``Content-Security-Policy: sandbox allow-scripts …``: it runs
  in an opaque origin, so even a script smuggled into it could not reach this
  server's API as the viewer; and values from the stream are made inert before
  Evidently sees them (:mod:`monitor.web.reports`).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections import OrderedDict
from typing import Any

from litestar import Request, Response

from monitor.web.requests import Turns, TurnsFull
from monitor.web.view import DaemonView
from storage.text import log_text

log = logging.getLogger("driftwarden.http")

#: report requests in at once, the one rendering and those waiting for their turn; beyond: 503
MAX_WAITING = 4
#: rendered reports kept (each a few MiB: Evidently inlines its script)
CACHE_SIZE = 3
#: seconds a client is told to wait when the queue is full
RETRY_AFTER_S = 10
#: a report page: scripts run (Evidently's inline ones), in a sandbox with an opaque origin,
#: and nothing is fetched from anywhere
REPORT_CSP = (
    "sandbox allow-scripts allow-popups; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval';"
    " style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'; frame-ancestors 'none'"
)


class ReportRenderer:
    """One report at a time, a short queue, a small cache (one per application)."""

    def __init__(self) -> None:
        #: the one rendering and those waiting: MAX_WAITING requests in all
        self.turns = Turns(1, MAX_WAITING - 1)
        self.cache: OrderedDict[tuple[str, ...], bytes] = OrderedDict()

    def cached(self, key: tuple[str, ...]) -> bytes | None:
        body = self.cache.get(key)
        if body is not None:
            self.cache.move_to_end(key)
        return body

    def keep(self, key: tuple[str, ...], body: bytes) -> None:
        self.cache[key] = body
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)


def _error(request: Request[Any, Any, Any], status: int, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    if "text/html" in request.headers.get("accept", ""):
        body = (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>driftwarden: no report</title></head>"
            f"<body><h1>No report</h1><p>{html.escape(message)}</p></body></html>"
        ).encode()
        return Response(content=body, status_code=status, media_type="text/html",
                        headers={**(headers or {}), "Content-Security-Policy": "default-src 'none'"})
    return Response(content=json.dumps({"error": message}).encode(), status_code=status,
                    media_type="application/json", headers=headers)


async def render_report(request: Request[Any, Any, Any], d: DaemonView, model: str, wid: str) -> Response[bytes]:
    from storage.records import window_id_from_url  # noqa: PLC0415

    if model not in d.pipeline.models:
        return _error(request, 404, f"unknown model {model[:100]}")
    try:
        window_id = window_id_from_url(wid)
    except ValueError:
        return _error(request, 400, "not a window id: give the URL-safe id of the window (its url_id in the API)")
    if window_id.split("|", 1)[0] != model:
        return _error(request, 404, "no such window of this model")
    renderer: ReportRenderer = request.app.state.reports
    rt = d.pipeline.models[model]
    ref = rt.prepared.reference
    key = (window_id, ref.sha256)
    body = renderer.cached(key)
    if body is None:
        try:
            async with renderer.turns.take():
                body = renderer.cached(key)
                if body is None:
                    body = await asyncio.to_thread(_make, d, model, window_id)
                    renderer.keep(key, body)
        except TurnsFull:
            return _error(request, 503, "busy rendering other reports; try again shortly",
                          {"Retry-After": str(RETRY_AFTER_S)})
        except _Unavailable as exc:
            return _error(request, exc.status, exc.message)
    return Response(content=body, status_code=200, media_type="text/html",
                    headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff",
                             "Referrer-Policy": "no-referrer", "Cache-Control": "private, max-age=300"})


class _Unavailable(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _make(d: DaemonView, model: str, window_id: str) -> bytes:
    from monitor.web.reports import ReportUnavailable, gather, render  # noqa: PLC0415

    rt = d.pipeline.models[model]
    # a prepared model keeps its reference's identity, not its rows: the report reads the
    # file the window was judged against (found by its hash in ``references``)
    ref = rt.prepared.reference
    try:
        inputs = gather(d.reads, window_id, reference_file=lambda: ref.path)
        page = render(inputs)
    except ReportUnavailable as exc:
        raise _Unavailable(exc.status, exc.message) from None
    log.info("report of window %s rendered (%d KiB)", log_text(window_id), len(page) // 1024,
             extra={"event": "report", "window_id": window_id, "model": model})
    return page.encode()
