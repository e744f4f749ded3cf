"""References registered through one instance's API, used by every instance (a shared store).

The retraining callback (``POST /api/v1/models/{m}/references``) reaches one
instance, which writes the file into its own state directory; the model's
windows may be judged by another instance (the owner of the model's partition).
On a shared store the registering instance also keeps the file's bytes in
``reference_files``; every instance checks on each tick whether a model's
newest registered reference differs from the one it judges with, copies the
file into its own ``state_dir/references/<model>/`` if it is not there, and
switches to it from the next window on.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from storage.db import Store
from storage.references import latest_reference, reference_file

log = logging.getLogger("driftwarden.references")

_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def local_copy(store: Store, state_dir: Path, model: str, registered: dict[str, Any]) -> Path | None:
    """The registered reference as a file on this machine: its recorded path if readable
    here, else a copy of the bytes kept in the store (None when neither exists)."""
    path = Path(registered["path"])
    if path.is_file():
        return path
    kept = reference_file(store, registered["sha256"])
    if kept is None:
        return None
    name, content = kept
    if not _NAME.fullmatch(name) or name.startswith("."):
        name = f"{registered['sha256'][:12]}.ref"
    folder = Path(state_dir) / "references" / model
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        fd, tmp = tempfile.mkstemp(prefix=".copy-", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, target)
    return target


def follow_registered_references(pipeline: Any, failed: set[str]) -> list[str]:
    """Switch each model whose newest registered reference (by any instance) is not the one
    in use; returns the models switched. A reference that cannot be loaded is logged
    once (its sha256 goes into ``failed``) and the one in use stays."""
    switched = []
    state_dir = Path(pipeline.config.daemon.state_dir)
    for name, rt in pipeline.models.items():
        latest = latest_reference(pipeline.store, name)
        if latest is None or latest["source"] != "callback":
            continue
        if latest["sha256"] == rt.prepared.reference.sha256 or latest["sha256"] in failed:
            continue
        path = local_copy(pipeline.store, state_dir, name, latest)
        if path is None:
            failed.add(latest["sha256"])
            log.error("model %s: registered reference %s is neither at %s nor in the store",
                      name, latest["version"], latest["path"])  # fmt: skip
            continue
        try:
            pipeline.swap_reference(name, str(path), latest["version"], record=False)
        except Exception as exc:  # noqa: BLE001 - keep judging with the reference in use
            failed.add(latest["sha256"])
            log.error("model %s: cannot use registered reference %s: %s", name, latest["version"], exc)
            continue
        log.info("model %s: now monitored against reference %s (registered by another instance)",
                 name, latest["version"])  # fmt: skip
        switched.append(name)
    return switched
