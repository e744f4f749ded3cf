"""A model's window shape: what decides which windows a row belongs to, and when they close.

The durable stream state of a model (see :mod:`monitor.windows.model_windows`) is only
meaningful for the shape it was built with: its open windows are keyed by start and end,
its watermark holds the lateness, its count-window positions count rows of one size and
slide. The state records its :class:`WindowShape`, so that a restart (or another
instance taking the partition over) with a different ``[models.window]`` notices and
re-windows instead of resuming open windows into a shape they do not fit.

Not part of the shape: ``min_rows`` and ``idle_timeout`` (read when a window closes,
never kept in the state).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from monitor.config import WindowConfig, format_duration


@dataclass(frozen=True, slots=True)
class WindowShape:
    """``by`` time: ``size``, ``step`` and ``lateness`` in ms; ``by`` count: ``size`` and
    ``step`` in rows, ``lateness`` 0. ``step`` equals ``size`` for tumbling windows."""

    by: str
    type: str
    size: int
    step: int
    lateness: int

    @classmethod
    def of(cls, window: WindowConfig) -> WindowShape:
        if window.by == "time":
            return cls("time", window.type, _ms(window.size), _ms(window.step), _ms(window.lateness))
        return cls("count", window.type, int(window.size), int(window.step), 0)  # type: ignore[arg-type]

    def to_state(self) -> dict[str, Any]:
        """The form kept in the durable state (JSON)."""
        return {"by": self.by, "type": self.type, "size": self.size, "step": self.step, "lateness": self.lateness}

    @classmethod
    def from_state(cls, raw: Any) -> WindowShape | None:
        """The shape a stored state recorded; None when it has none (state written before
        shapes were recorded) or it cannot be read."""
        if not isinstance(raw, Mapping):
            return None
        try:
            shape = cls(str(raw["by"]), str(raw["type"]), int(raw["size"]), int(raw["step"]), int(raw["lateness"]))
        except (KeyError, TypeError, ValueError):
            return None
        ok = shape.by in ("time", "count") and shape.type in ("tumbling", "sliding")
        return shape if ok and 0 < shape.step <= shape.size else None

    @property
    def grid(self) -> tuple[str, int, int]:
        """What assigns a row to its windows: ``(by, size, step)``."""
        return (self.by, self.size, self.step)

    def fits(self, start: int, end: int) -> bool:
        """Whether a window ``[start, end)`` is one of this shape's windows."""
        return end - start == self.size and start % self.step == 0

    def describe(self) -> str:
        """For people: ``tumbling 5m, lateness 1m``, ``sliding 2m every 30s, lateness 0s``,
        ``tumbling 2s500ms, lateness 0s``, ``tumbling 1000 rows``, ``sliding 1000 rows
        every 250``. Durations are written as in the config (:func:`monitor.config.format_duration`)."""
        if self.by == "count":
            every = f" every {self.step}" if self.type == "sliding" else ""
            return f"{self.type} {self.size} rows{every}"
        size, step, lateness = (format_duration(timedelta(milliseconds=ms)) for ms in (self.size, self.step, self.lateness))
        every = f" every {step}" if self.type == "sliding" else ""
        return f"{self.type} {size}{every}, lateness {lateness}"


def describe(shape: WindowShape | None) -> str:
    """:meth:`WindowShape.describe`, or what an unrecorded shape is called."""
    return shape.describe() if shape is not None else "unknown (state saved by an older driftwarden)"


@dataclass(frozen=True, slots=True)
class StoredShape:
    """The window shape a model's durable state was built with, as a partition row holds
    it (``shape`` None: not recorded, state of an older driftwarden)."""

    model: str
    topic: str
    partition: int
    owner: str
    shape: WindowShape | None

    def differs_from(self, configured: Mapping[str, WindowShape]) -> bool:
        """Whether ``configured`` (model -> shape) gives this model another shape than the
        one recorded (False when unrecorded or the model is not configured)."""
        return self.shape is not None and self.model in configured and self.shape != configured[self.model]


def stored_shapes(rows: Iterable[Mapping[str, Any]]) -> list[StoredShape]:
    """Every model state in ``rows`` (from :func:`storage.stream.partition_rows`), by model
    and partition."""
    out = [
        StoredShape(str(name), str(r["topic"]), int(r["partition"]), str(r["owner"] or ""),
                    WindowShape.from_state(snap.get("shape") if isinstance(snap, Mapping) else None))
        for r in rows
        for name, snap in (r["state"].get("models") or {}).items()
    ]
    return sorted(out, key=lambda x: (x.model, x.topic, x.partition))


def mismatches(stored: Iterable[StoredShape], configured: Mapping[str, WindowShape]) -> list[StoredShape]:
    """The stored states built with another shape than ``configured`` (model -> shape)
    says: another instance runs another definition of the model, or this config changed
    since the state was saved. Unrecorded shapes and unconfigured models are left out."""
    return [s for s in stored if s.differs_from(configured)]


def mismatch_text(s: StoredShape, configured: WindowShape) -> str:
    """One line for people (``check``, the log)."""
    held = f", held by {s.owner}" if s.owner else ""
    return (
        f"model {s.model}: its stream state in the store (partition {s.partition}{held}) was built with"
        f" window {s.shape.describe() if s.shape else '?'}; this config says {configured.describe()}:"
        " an instance with this config re-windows its open windows when it resumes the partition"
        ' (README "Changing a window")'
    )


def _ms(td: Any) -> int:
    return round(td.total_seconds() * 1000) if isinstance(td, timedelta) else int(td)

