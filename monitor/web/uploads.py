"""``POST /api/v1/models/{m}/references``: the retraining callback's upload, never whole in memory.

1. Checked before the body is read (the token already was, by the route's guard):
   the model exists (404), ``?version=`` is 1..64 of letters, digits, ``. _ -`` (400),
   a ``Content-Length`` is declared (411), non-zero (400), at most
   ``daemon.max_reference_bytes`` (413).
2. The body streams into a temp file ``state_dir/references/<model>/.upload-*.part``
   (0600) and must arrive within ``daemon.http_body_timeout`` (408).
3. One upload at a time, from its first byte of body to its answer (so disk and parsing
   memory are one reference's): another one meanwhile is answered 503 with
   ``Retry-After`` before its body is read. In a worker thread the file is loaded and
   validated like the configured reference (``monitor.references.validate``: rows,
   columns, types; for a model joining labels, the label column too). Unfit: 422 naming
   the column; the temp file is removed and the reference in force stays. A file holding more values than
   ``daemon.max_reference_bytes / 4`` (rows times the model's columns; a few KB of
   Parquet can hold millions of equal values) is refused (422) before it is read into
   memory.
4. Fit: renamed atomically to ``<version>-<sha256[:12]>.csv|.parquet``, recorded in
   ``references`` and used from the next window on; 201
   ``{"model", "version", "sha256", "rows", "warnings"}`` (``warnings``: what the log says
   of the new reference, e.g. a CSV column of ``1.0``, ``2.0`` read as that text, or that it
   lacks the label column the config names; usually ``[]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from monitor.logs import logged_warnings
from monitor.web.requests import ApiError, declared_length, receive_body
from monitor.web.view import DaemonView

log = logging.getLogger("driftwarden.http")

VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}")
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".upload-", ".part"


def uploads_dir(daemon: DaemonView, model: str) -> Path:
    return Path(daemon.config.daemon.state_dir) / "references" / model


def remove_partial_uploads(state_dir: Path) -> int:
    """Delete temp files an interrupted upload left behind (called when the server starts)."""
    n = 0
    for p in (Path(state_dir) / "references").glob(f"*/{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


async def receive_reference(
    daemon: DaemonView, model: str, version: str | None, headers: Mapping[str, str],
    receive: Callable[[], Awaitable[Any]], lock: asyncio.Lock,
) -> dict[str, Any]:
    """Steps 1-4 above; returns the 201 body or raises :class:`ApiError`."""
    if lock.locked():  # one at a time: the next waits in its client, not in our threads
        raise ApiError(503, "another reference upload is being processed; retry", {"Retry-After": "5"})
    if model not in daemon.pipeline.models:
        raise ApiError(404, f"unknown model {model[:100]}")
    if not version or not VERSION.fullmatch(version):
        raise ApiError(400, "query parameter version is required (1-64 letters, digits, . _ -)")
    cfg = daemon.config.daemon
    length = declared_length(headers, cfg.max_reference_bytes)
    if length == 0:
        raise ApiError(400, "empty body: send the reference data as CSV or Parquet")
    # held from before the body is read (no await since the check above): a second upload
    # while one streamed its body read its own whole body to disk too, then waited
    async with lock:
        folder = uploads_dir(daemon, model)
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX, dir=folder)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                await receive_body(receive, length, cfg.http_body_timeout.total_seconds(), f.write)
            parquet = "parquet" in headers.get("content-type", "").lower()
            # the lock is held on the event loop: waiting uploads take no worker thread
            return await asyncio.to_thread(_register, daemon, model, version, tmp, parquet)
        finally:
            tmp.unlink(missing_ok=True)


def _register(daemon: DaemonView, model: str, version: str, tmp: Path, parquet: bool) -> dict[str, Any]:
    from monitor.references.load import ReferenceError, ReferenceSpec, load_reference  # noqa: PLC0415

    with open(tmp, "rb") as f:
        fmt = "parquet" if parquet or f.read(4) == b"PAR1" else "csv"
    rt = daemon.pipeline.models[model]
    loading: list[str] = []  # what loading it logged (a CSV column of 1.0, 2.0), for the answer
    try:
        with logged_warnings("driftwarden.references", loading):
            ref = load_reference(tmp, ReferenceSpec.from_config(rt.config), fmt=fmt,
                                 max_cells=daemon.config.daemon.max_reference_bytes // 4)
    except ReferenceError as exc:
        log.warning("model %s: reference %s refused: %s", model, version, exc.problem)
        raise ApiError(422, f"reference refused: {exc.problem}") from None
    final = tmp.parent / f"{version}-{ref.sha256[:12]}.{fmt}"
    existed = final.exists()
    os.replace(tmp, final)
    try:
        pm = daemon.pipeline.swap_reference(
            model, str(final), version, loaded=dataclasses.replace(ref, path=final)
        )
    except BaseException as exc:
        if not existed:
            final.unlink(missing_ok=True)
        if isinstance(exc, ReferenceError):  # its labels (refused before anything switched)
            log.warning("model %s: reference %s refused: %s", model, version, exc.problem)
            raise ApiError(422, f"reference refused: {exc.problem}") from None
        raise
    log.info("model %s: now monitored against reference %s (%s rows)", model, version, pm.reference.rows)
    return {"model": model, "version": version, "sha256": ref.sha256, "rows": pm.reference.rows,
            "warnings": _warnings(daemon, model, final, [w.replace(str(tmp), str(final)) for w in loading])}


def _warnings(daemon: DaemonView, model: str, final: Path, loading: list[str]) -> list[str]:
    """What the daemon logged as a WARNING about the reference just put in use, for the
    uploader, who does not read the daemon's log: ``loading``, what loading the file logged
    (a CSV column of whole numbers written as decimals, ``1.0``, which no message's value
    matches), then a label column the config names that the file lacks or leaves empty (no
    label drift, estimates or reference figures). The file is named by its name alone: an
    answer never holds a path of the state dir."""
    warning = daemon.pipeline.label_reference_warning(model)
    return [w.replace(str(final), final.name) for w in [*loading, *([warning] if warning else [])]]
