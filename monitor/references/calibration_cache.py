"""Calibrations kept on disk, so a restart does not calibrate every reference again.

Calibrating a reference (``drift.thresholds = "calibrated"``) scores hundreds of
bootstrap draws per column: seconds for a small reference, tens of seconds for a
100k-row one, every start and every reload. Its result depends only on the reference's
content and the calibration's inputs, so it is stored once under a key made of both:
the reference file's SHA-256, each column's resolved test, the window sizes drawn, the
levels, the binning, the resampling settings and
:data:`detectors.calibration.CALIBRATION_VERSION`. Any change to one of them is another
key, so a stored calibration is never used for inputs it was not made from.

Files are ``<state_dir>/calibration/<key>.json`` (0600; written to a temporary file and
renamed, so a crash never leaves half a file), each with the SHA-256 of its content. A
file that is not a regular file, cannot be read or parsed, fails its hash, or holds a
calibration unlike the inputs asked (levels, sizes, columns' tests, finite numbers) is
ignored and replaced. At most :data:`KEEP` files are kept: the oldest by modification
time go first (a file used is touched, so those in use stay).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from detectors import Calibration
from detectors.calibration import (
    BODY_PROBS,
    CALIBRATION_VERSION,
    calibration_from_dict,
    calibration_to_dict,
)
from detectors.drift.registry import get_test
from detectors.spec import ColumnSpec

log = logging.getLogger("driftwarden.calibration_cache")

#: stored calibrations kept at most (a few KB each)
KEEP = 256
#: largest stored calibration read (bytes): one is a few KB per column
MAX_BYTES = 16 << 20


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("driftwarden")
    except PackageNotFoundError:  # run from a source tree without installing it
        return "source"


def _read_regular(path: Path) -> bytes:
    """A stored calibration's bytes: a regular file of at most :data:`MAX_BYTES`, opened
    without following a symlink (a FIFO or a link put there must not hang or redirect the
    start)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            raise ValueError("not a regular file of a calibration's size")
        return fh.read(MAX_BYTES + 1)


def _sealed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the SHA-256 of its canonical JSON, so a file damaged on disk (a torn
    write, a bit flip, an edit by hand) is told from a calibration. Not a signature:
    whoever may write the state dir (the daemon's user, root) may change the database too."""
    body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return {"sha256": hashlib.sha256(body).hexdigest(), "calibration": data}


def _unsealed(doc: Any) -> Any:
    """The calibration a :func:`_sealed` document holds; ``ValueError`` when its hash fails."""
    if not isinstance(doc, dict) or not isinstance(doc.get("calibration"), dict):
        raise ValueError("not a stored calibration")
    body = orjson.dumps(doc["calibration"], option=orjson.OPT_SORT_KEYS)
    if hashlib.sha256(body).hexdigest() != doc.get("sha256"):
        raise ValueError("its content does not match its hash (damaged)")
    return doc["calibration"]


def _sound(cal: Calibration, expect: tuple[Sequence[ColumnSpec], Sequence[int], float, float] | None) -> str:
    """Why ``cal`` is not one to use ("" when it is): its levels, sizes or columns are not
    those asked, or its numbers are not finite and shaped as :func:`calibrate` makes them."""
    if expect is not None:
        specs, sizes, alpha_column, alpha = expect
        if (cal.alpha_column, cal.alpha) != (alpha_column, alpha) or list(cal.sizes) != list(sizes):
            return "its levels or sizes are not the ones asked"
        tests = {s.name: get_test(s.method).name for s in specs}
        if any(name not in tests or m.test != tests[name] for name, m in cal.columns.items()):
            return "its columns or tests are not the ones asked"
        if not cal.min_drifted or not all(1 <= k <= i for i, k in enumerate(cal.min_drifted) if i):
            return "its dataset count table is malformed"
    values = [cal.rho]
    for m in cal.columns.values():
        if m.score_kind not in ("p_value", "distance") or not m.n_eff:
            return f"column {m.column!r} is malformed"
        if not (len(m.n_eff) == len(m.body) == len(m.tail_beta)) or any(len(b) != len(BODY_PROBS) for b in m.body):
            return f"column {m.column!r} is malformed"
        values += [*m.n_eff, *m.tail_beta, *(x for b in m.body for x in b)]
    if not all(math.isfinite(v) for v in values):
        return "it holds a number that is not finite"
    return ""


class CalibrationCache:
    """Calibrations by key in ``folder`` (created 0700 when first written)."""

    def __init__(self, folder: Path, *, keep: int = KEEP) -> None:
        self.folder = Path(folder)
        self.keep = keep
        #: how many calibrations were read back / computed and stored, since this object was made
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(reference_sha256: str, specs: Sequence[ColumnSpec], settings: Mapping[str, Any]) -> str:
        """The key of a calibration: a SHA-256 over everything it is computed from, and the
        code that computes it (:data:`CALIBRATION_VERSION` and the installed driftwarden's
        version: a release may change a test's scores without the method changing)."""
        doc = {
            "version": CALIBRATION_VERSION,
            "package": _package_version(),
            "reference": reference_sha256,
            "specs": [asdict(s) for s in specs],
            "settings": dict(settings),
        }
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def get_or_compute(
        self, key: str, compute: Callable[[], Calibration],
        expect: tuple[Sequence[ColumnSpec], Sequence[int], float, float] | None = None,
    ) -> Calibration:
        """The calibration stored under ``key``, or ``compute()`` stored there. ``expect``
        (specs, sizes, alpha_column, alpha): a stored one that does not match them, or is
        not well-formed (:func:`_sound`), is computed again and replaced."""
        path = self.folder / f"{key}.json"
        try:
            cal = calibration_from_dict(_unsealed(orjson.loads(_read_regular(path))))
            problem = _sound(cal, expect)
            if problem:
                raise ValueError(problem)
        except FileNotFoundError:
            cal = None
        except (OSError, ValueError) as exc:  # unreadable, damaged, another version: made again
            log.warning("calibration cache: ignoring %s: %s", path, exc)
            cal = None
        if cal is not None:
            self.hits += 1
            try:
                os.utime(path)  # in use: the last to be pruned
            except OSError:
                pass
            return cal
        cal = compute()
        self.misses += 1
        try:
            self._write(path, orjson.dumps(_sealed(calibration_to_dict(cal))))
            self._prune()
        except OSError as exc:  # a full or read-only disk costs the next start time, nothing else
            log.warning("calibration cache: cannot store %s: %s", path, exc.strerror or exc)
        return cal

    def _write(self, path: Path, data: bytes) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)  # 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _prune(self) -> None:
        def mtime(p: Path) -> float:
            try:
                return p.stat().st_mtime
            except OSError:  # removed meanwhile (another process's prune)
                return 0.0

        files = sorted(self.folder.glob("*.json"), key=mtime, reverse=True)
        for old in files[self.keep :]:
            old.unlink(missing_ok=True)
        for tmp in self.folder.glob(".tmp-*"):  # a crash's leftovers, once an hour old
            try:
                if tmp.stat().st_mtime < time.time() - 3600:
                    tmp.unlink()
            except OSError:
                pass
