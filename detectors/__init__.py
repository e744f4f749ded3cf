"""driftwarden's statistics engine: pure functions, numpy in, frozen dataclasses out.

No I/O, no Kafka, no SQLite; never imports ``monitor``, ``storage`` or
``alerts``. Figures equal Evidently 0.7's on the same data (``auto`` tests,
thresholds, binning, dataset share), computed from a reference prepared once.
"""

from detectors._columns import (
    PreparedColumn,
    PreparedReference,
    merge_prepared,
    prepare_reference,
)
from detectors.calibration import (
    Calibration,
    NullModel,
    calibrate,
    calibration_sizes,
    effective_size,
    resolve_specs,
)
from detectors.comparison import Comparison, compare
from detectors.dataset import (
    ColumnDrift,
    DatasetDrift,
    DatasetLevel,
    benjamini_hochberg,
    calibrated_dataset_drift,
    calibrated_dataset_level,
    column_drift,
    dataset_drift,
)
from detectors.drift import (
    DriftTest,
    all_tests,
    auto_test_name,
    get_test,
    list_tests,
    register_test,
)
from detectors.estimation import Calibrator, Estimate, estimate_binary, fit_calibrator
from detectors.multivariate import (
    MultivariateDrift,
    PreparedDomainReference,
    multivariate_drift,
    prepare_domain_reference,
)
from detectors.performance import (
    ClassificationMetrics,
    ConfidenceInterval,
    RegressionMetrics,
    bootstrap_ci,
    classification_metrics,
    regression_metrics,
)
from detectors.quality import ColumnQuality, DataQuality, data_quality
from detectors.sequential import CUSUM, PageHinkley
from detectors.spec import ColumnSpec
from detectors.window_performance import (
    Figure,
    WindowPerformance,
    binary_performance,
    multiclass_performance,
    regression_performance,
)

__all__ = [
    "CUSUM",
    "Calibration",
    "NullModel",
    "calibrate",
    "calibrated_dataset_drift",
    "calibrated_dataset_level",
    "calibration_sizes",
    "effective_size",
    "merge_prepared",
    "resolve_specs",
    "Calibrator",
    "Comparison",
    "Estimate",
    "Figure",
    "WindowPerformance",
    "binary_performance",
    "compare",
    "estimate_binary",
    "fit_calibrator",
    "multiclass_performance",
    "regression_performance",
    "ClassificationMetrics",
    "ColumnDrift",
    "ColumnQuality",
    "ColumnSpec",
    "DataQuality",
    "DatasetDrift",
    "DatasetLevel",
    "ConfidenceInterval",
    "DriftTest",
    "MultivariateDrift",
    "PageHinkley",
    "PreparedColumn",
    "PreparedDomainReference",
    "PreparedReference",
    "RegressionMetrics",
    "all_tests",
    "auto_test_name",
    "benjamini_hochberg",
    "bootstrap_ci",
    "classification_metrics",
    "column_drift",
    "data_quality",
    "dataset_drift",
    "get_test",
    "list_tests",
    "multivariate_drift",
    "prepare_domain_reference",
    "prepare_reference",
    "register_test",
    "regression_metrics",
]
