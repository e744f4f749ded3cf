"""Drift tests: one module per family, registered in :mod:`detectors.drift.registry`."""

from detectors.drift.auto import auto_test_name
from detectors.drift.registry import DriftTest, all_tests, get_test, list_tests, register_test

__all__ = ["DriftTest", "all_tests", "auto_test_name", "get_test", "list_tests", "register_test"]
