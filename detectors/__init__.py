"""driftwarden's statistics engine: pure functions, numpy in, frozen dataclasses out.

No I/O, no Kafka, no SQLite; never imports ``monitor``, ``storage`` or
``alerts``. Figures equal Evidently 0.7's on the same data (``auto`` tests,
thresholds, binning, dataset share), computed from a reference prepared once.

Its names are imported lazily (PEP 562): ``import detectors.x`` or ``from detectors import
name`` loads only the submodule that defines what is asked for. So a light module of
another package (``storage.records`` uses :mod:`detectors._fast_init`) does not pull in
numpy's and scipy's statistics through this package's ``__init__`` (the read commands
stay light: ``tests/monitor/cli/test_light_reads.py``).
"""


import importlib as _importlib
from typing import Any as _Any

#: each submodule -> the names this package exports from it
_EXPORTS: dict[str, tuple[str, ...]] = {
    "detectors._columns": ("PreparedColumn", "PreparedReference", "merge_prepared", "prepare_reference"),
    "detectors.calibration": ("Calibration", "NullModel", "calibrate", "calibration_sizes", "effective_size", "resolve_specs"),
    "detectors.comparison": ("Comparison", "compare"),
    "detectors.dataset": ("ColumnDrift", "DatasetDrift", "DatasetLevel", "benjamini_hochberg", "calibrated_dataset_drift", "calibrated_dataset_level", "column_drift", "dataset_drift"),
    "detectors.drift": ("DriftTest", "all_tests", "auto_test_name", "get_test", "list_tests", "register_test"),
    "detectors.estimation": ("Calibrator", "Estimate", "estimate_binary", "fit_calibrator"),
    "detectors.multivariate": ("MultivariateDrift", "PreparedDomainReference", "multivariate_drift", "prepare_domain_reference"),
    "detectors.performance": ("ClassificationMetrics", "ConfidenceInterval", "RegressionMetrics", "bootstrap_ci", "classification_metrics", "regression_metrics"),
    "detectors.quality": ("ColumnQuality", "DataQuality", "data_quality"),
    "detectors.sequential": ("CUSUM", "PageHinkley"),
    "detectors.spec": ("ColumnSpec",),
    "detectors.window_performance": ("Figure", "WindowPerformance", "binary_performance", "multiclass_performance", "regression_performance"),
}
#: an exported name -> the submodule that defines it
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> _Any:
    """``detectors.<name>``: loaded from its submodule on first use, then kept here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
