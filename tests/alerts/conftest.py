"""Shared helpers: an injected clock, a store in tmp_path, windows and figures."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.engine import AlertEngine, AlertSettings, Transition
from alerts.notifiers.base import NotifierSpec
from alerts.payloads import WindowContext
from alerts.rules import Rule
from storage.db import Store
from storage.records import MetricRow, WindowKey, WindowRecord, iso
from tests.store_targets import StoreTarget

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


class Clock:
    """A settable clock: ``clock()`` returns now, ``advance(...)`` moves it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **kw: float) -> datetime:
        self.now += delta if delta is not None else timedelta(**kw)
        return self.now

    def set(self, when: datetime) -> datetime:
        self.now = max(self.now, when)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "driftwarden.db"


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Store]:
    """The test's store, on SQLite and on PostgreSQL (``store_target`` is parametrized)."""
    s = store_target.open(synchronous="NORMAL")
    yield s
    s.close()


def rng() -> random.Random:
    return random.Random(1234)


@dataclass
class Feed:
    """Drives an engine with consecutive 15-minute windows of one model."""

    engine: AlertEngine
    store: Store
    clock: Clock
    model: str = "churn"
    version: str = "v12"
    segment: str = ""
    size: timedelta = timedelta(minutes=15)
    start: datetime = T0
    n: int = 0
    context: WindowContext = field(default_factory=WindowContext)

    def window(
        self,
        values: Mapping[str, float] | None = None,
        *,
        columns: Mapping[str, tuple[float, bool]] | None = None,
        drifted: Sequence[tuple[str, str, float]] = (),
        version: str | None = None,
        segment: str | None = None,
        advance: bool = True,
        context: WindowContext | None = None,
        rows: int = 1000,
    ) -> list[Transition]:
        """One window: dataset-level ``values`` by metric, per-column drift
        ``columns`` as {column: (score, drifted)}. Moves the clock to its end."""
        s = self.start + self.n * self.size
        e = s + self.size
        if advance:
            self.n += 1
        self.clock.set(e)
        key = WindowKey(
            self.model,
            version or self.version,
            self.segment if segment is None else segment,
            iso(s),
            iso(e),
        )
        rec = WindowRecord(key, rows, "ok", e)
        metrics = [MetricRow("", m, v) for m, v in (values or {}).items()]
        for col, (score, d) in (columns or {}).items():
            metrics.append(MetricRow(col, "wasserstein", score, 0.1, d, test="wasserstein"))
        ctx = context or self.context
        if drifted:
            ctx = WindowContext(
                reference_metrics=ctx.reference_metrics,
                drifted_columns=drifted,
                data=ctx.data,
                links=ctx.links,
                callback=ctx.callback,
            )
        with self.store.transaction():
            return self.engine.on_window(rec, metrics, context=ctx)


def make_engine(
    store: Store,
    clock: Clock,
    rules: Sequence[Rule],
    notifiers: Mapping[str, object] | None = None,
    **settings: object,
) -> AlertEngine:
    specs = {"ops": NotifierSpec()} if notifiers is None else notifiers
    return AlertEngine(
        store,
        rules,
        notifiers=specs,
        clock=clock,
        settings=AlertSettings(**settings),  # type: ignore[arg-type]
    )


def events(transitions: Sequence[Transition]) -> list[tuple[str, str, str]]:
    return [(t.rule, t.from_state, t.to_state) for t in transitions]
