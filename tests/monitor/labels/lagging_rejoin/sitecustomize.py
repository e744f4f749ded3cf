"""Fault injection for a daemon started by a test (this folder first on its PYTHONPATH):
with ``DW_TEST_LAGGING_REJOIN=<seconds>``, every group join after the first completes that
many seconds after the group answered (the old assignment still listed, the new generation
already known): what a busy machine does to the member that was in the group when another
one joins. Used by tests/monitor/labels/test_broker_postgres.py."""

import os

if os.environ.get("DW_TEST_LAGGING_REJOIN"):
    import kafka.coordinator.base as _base

    _join = _base.BaseCoordinator._do_join_and_sync_async
    _joins = {"n": 0}

    async def _lagging(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = await _join(self, *args, **kwargs)
        _joins["n"] += 1
        if _joins["n"] >= 2:
            await self._manager._net.sleep(float(os.environ["DW_TEST_LAGGING_REJOIN"]))
        return result

    _base.BaseCoordinator._do_join_and_sync_async = _lagging
