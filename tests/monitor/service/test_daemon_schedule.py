"""The daemon's scheduled jobs, from its config: ``daemon.tick_interval`` is how often the
loop's tick (idle windows, references) and the alert tick (no-data alerts, reminders) run,
``retention.prune_interval`` how often the prune does. Read from the scheduler the daemon
built (APScheduler's jobs) while its Kafka client is still looking for a broker."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta
from pathlib import Path

from monitor.config import load_config
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import wait_for, write_config


def _intervals(tmp_path: Path, daemon_extra: str, extra: str) -> dict[str, timedelta]:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: no broker needed
    try:
        path = write_config(tmp_path, bootstrap=f"127.0.0.1:{silent.getsockname()[1]}", topic="p", http_port=1,
                            daemon_extra=daemon_extra, extra=extra)
        path.write_text(path.read_text().replace('tick_interval = "1s"\n', ""))  # the helper's own
        d = Daemon(load_config(path), http=False)
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        try:
            assert wait_for(lambda: d._scheduler is not None, timeout=30)
            jobs = {job.id: job.trigger.interval for job in d._scheduler.get_jobs()}
        finally:
            d.stop()
            t.join(timeout=30)
        assert not t.is_alive()
        return jobs
    finally:
        silent.close()


def test_tick_and_prune_intervals_are_the_configured_ones(tmp_path: Path) -> None:
    default = _intervals(tmp_path / "default", "", "")
    assert (default["tick"], default["alert-tick"], default["prune"]) == (
        timedelta(seconds=5), timedelta(seconds=5), timedelta(hours=1)
    )
    got = _intervals(tmp_path / "set", 'tick_interval = "17s"', '[retention]\nprune_interval = "7m"\n')
    assert (got["tick"], got["alert-tick"], got["prune"]) == (
        timedelta(seconds=17), timedelta(seconds=17), timedelta(minutes=7)
    )
