"""``driftwarden report``: a stored window's Evidently HTML report, written to a file.

The store is opened read-only. The window is named by its id as ``driftwarden
windows`` lists it (``model|version|segment|start|end``) or by its URL-safe id
(the last-but-one part of a report link); ``--model`` is optional since both name
the model. The reference: the file the window was judged against (from the
store's ``references``), else the config's (``-c``) or the newest registered one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def resolve_window_id(text: str) -> str:
    """The window id ``text`` stands for (a raw id, or a URL-safe one); ``ValueError`` if neither."""
    from storage.records import window_id_from_url  # noqa: PLC0415

    if text.count("|") >= 4:
        return text
    return window_id_from_url(text.strip())


def write_report(
    store: Any, window: str, out: Path, *, model: str | None, config: Any | None, echo: Callable[..., None]
) -> int:
    """Render and write the report; returns the exit status (0 written, 1 no report, 2 bad arguments)."""
    from monitor.web.reports import ReportUnavailable, gather, render  # noqa: PLC0415
    from storage.references import latest_reference  # noqa: PLC0415

    try:
        window_id = resolve_window_id(window)
    except ValueError:
        # the caller looked it up as a ref first: a ref that matched nothing ends here too
        echo(f"driftwarden: --window: no window {window!r}: give its ref (first column of `driftwarden windows`),"
             " its id (model|version|segment|start|end) or its URL-safe id (from a report link)", err=True)
        return 2
    if out.is_dir():  # before rendering, which takes seconds
        echo(f"driftwarden: --out: {out} is a folder; give the report's file name, e.g. {out / 'report.html'}",
             err=True)
        return 2
    if not out.resolve().parent.is_dir():  # before rendering, which takes seconds
        echo(f"driftwarden: --out: no folder {out.resolve().parent} to write {out.name} in", err=True)
        return 2
    named = window_id.split("|", 1)[0]
    if model is not None and model != named:
        echo(f"driftwarden: window {window_id!r} belongs to model {named!r}, not {model!r}", err=True)
        return 2
    if not store.table_exists("window_samples"):
        echo("driftwarden: this state dir was written by an older driftwarden that kept no samples of"
             " windows: start the upgraded daemon; windows closed from then on can be reported", err=True)
        return 1
    mcfg = None
    if config is not None:
        mcfg = next((m for m in config.models if m.name == named), None)

    def reference_file() -> Path | None:
        if mcfg is not None:
            return Path(mcfg.reference)
        latest = latest_reference(store, named)
        return Path(latest["path"]) if latest and latest.get("path") else None

    try:
        inputs = gather(store, window_id, reference_file=reference_file)
        page = render(inputs)
    except ReportUnavailable as exc:
        echo(f"driftwarden: no report for window {window_id!r}: {exc.message}", err=True)
        return 1
    try:
        _write_private(out, page.encode())
    except OSError as exc:
        echo(f"driftwarden: --out: cannot write {out}: {exc.strerror or exc}", err=True)
        return 1
    echo(
        f"wrote {out} ({len(page) // 1024} KiB): window {window_id}, a sample of {inputs.sample_rows} of its"
        f" {inputs.window['rows']} rows against {inputs.reference_note}"
    )
    return 0


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by this user only (samples are data)."""
    folder = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
