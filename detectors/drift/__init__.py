"""Drift tests: one module per family, registered in :mod:`detectors.drift.registry`.

Importing this package imports every family module, which registers its tests;
Python imports a package before any of its modules, so the registry is full
whenever :mod:`detectors.drift.registry` is usable.
"""

from detectors.drift import binned, contingency, distance, ecdf, location  # noqa: F401 - registers tests
from detectors.drift.auto import auto_test_name
from detectors.drift.registry import DriftTest, all_tests, get_test, list_tests, register_test

__all__ = ["DriftTest", "all_tests", "auto_test_name", "get_test", "list_tests", "register_test"]
