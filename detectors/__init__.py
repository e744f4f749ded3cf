"""driftwarden's statistics engine: pure functions, numpy in, frozen dataclasses out.

No I/O, no Kafka, no SQLite; never imports ``monitor``, ``storage`` or
``alerts``. Figures equal Evidently 0.7's on the same data (``auto`` tests,
thresholds, binning, dataset share), computed from a reference prepared once.
"""

from detectors._columns import (
    ColumnSpec,
    PreparedColumn,
    PreparedReference,
    prepare_reference,
)
from detectors.dataset import (
    ColumnDrift,
    DatasetDrift,
    benjamini_hochberg,
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
from detectors.quality import ColumnQuality, DataQuality, data_quality

__all__ = [
    "ColumnDrift",
    "ColumnQuality",
    "ColumnSpec",
    "DataQuality",
    "DatasetDrift",
    "DriftTest",
    "PreparedColumn",
    "PreparedReference",
    "all_tests",
    "auto_test_name",
    "benjamini_hochberg",
    "column_drift",
    "data_quality",
    "dataset_drift",
    "get_test",
    "list_tests",
    "prepare_reference",
    "register_test",
]
