"""detectors._fast_init: the cheaper ``__init__`` of the per-figure dataclasses makes the
same objects as the one ``dataclasses`` generates."""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
from typing import Any

import pytest

from detectors._fast_init import fast_init
from detectors.dataset import ColumnDrift
from detectors.quality import ColumnQuality
from storage.records import MetricRow


def generated(cls: type) -> type:
    """A twin of ``cls`` with the ``__init__`` ``dataclasses`` generates."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


CASES: list[tuple[type, tuple[Any, ...], dict[str, Any]]] = [
    (MetricRow, ("", "row_count", 120.0), {}),
    (MetricRow, ("age", "drift_score", 0.2), {"threshold": 0.1, "drifted": True, "test": "wasserstein"}),
    (MetricRow, ("", "accuracy", 0.9, None, None, None, None, 0.85, 0.95), {}),
    (ColumnDrift, ("age", "numerical", "ks", 0.01, 0.05, True, "p_value"), {"reference_n": 10, "current_n": 3}),
    (ColumnQuality, ("plan", 0.0, None, 0.5, ("x",), 0), {"rows": 4}),
]


@pytest.mark.parametrize(("cls", "args", "kwargs"), CASES)
def test_the_same_object_as_the_generated_init(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    twin = generated(cls)
    ours, theirs = cls(*args, **kwargs), twin(*args, **kwargs)
    assert repr(dataclasses.astuple(ours)) == repr(dataclasses.astuple(theirs))  # NaN defaults too
    assert str(inspect.signature(cls)) == str(inspect.signature(twin))  # NaN defaults: as text
    assert pickle.loads(pickle.dumps(ours)) == ours or any(
        isinstance(v, float) and math.isnan(v) for v in dataclasses.astuple(ours)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.column = "other"  # type: ignore[misc]


def test_missing_and_unknown_arguments_raise_as_before() -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'value'"):
        MetricRow("", "row_count")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'extra'"):
        MetricRow("", "row_count", 1.0, extra={})  # type: ignore[call-arg]


def test_classes_it_cannot_speed_up_are_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls in (NoSlots, Factory):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)
