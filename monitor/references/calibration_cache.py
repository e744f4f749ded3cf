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
renamed, so a crash never leaves half a file). A file that cannot be read or parsed is
ignored and replaced. At most :data:`KEEP` files are kept: the oldest by modification
time go first (a file used is touched, so those in use stay).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from detectors import Calibration
from detectors.calibration import CALIBRATION_VERSION, calibration_from_dict, calibration_to_dict
from detectors.spec import ColumnSpec

log = logging.getLogger("driftwarden.calibration_cache")

#: stored calibrations kept at most (a few KB each)
KEEP = 256


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
        """The key of a calibration: a SHA-256 over everything it is computed from."""
        doc = {
            "version": CALIBRATION_VERSION,
            "reference": reference_sha256,
            "specs": [asdict(s) for s in specs],
            "settings": dict(settings),
        }
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def get_or_compute(self, key: str, compute: Callable[[], Calibration]) -> Calibration:
        """The calibration stored under ``key``, or ``compute()`` stored there."""
        path = self.folder / f"{key}.json"
        try:
            cal = calibration_from_dict(orjson.loads(path.read_bytes()))
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
            self._write(path, orjson.dumps(calibration_to_dict(cal)))
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
        files = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[self.keep :]:
            old.unlink(missing_ok=True)
