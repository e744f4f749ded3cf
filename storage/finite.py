"""JSON of stored figures: JSON has no NaN or infinity, stored figures may (a feature
value of 1e308 makes a Wasserstein distance infinite). Every JSON writer of figures
(the HTTP API, the dashboard, ``--json``, webhooks) sends such a value as ``null``;
the store keeps the value itself."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with NaN/±inf floats replaced by None, recursively through mappings,
    lists and tuples (a tuple becomes a list, as JSON writes it anyway)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps_finite(value: Any, **kw: Any) -> str:
    """``json.dumps(value, **kw)`` that is always valid JSON: non-finite floats become
    ``null``. Values without any are written in one pass (the common case); only a
    value ``json`` refuses is walked by :func:`finite` first."""
    try:
        return json.dumps(value, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **kw)
