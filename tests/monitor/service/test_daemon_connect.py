"""A stop asked for while the Kafka client is still bootstrapping ends the daemon at once.

kafka-python's consumer blocks in its constructor until it reaches a broker (or gives up
after tens of seconds): a SIGTERM then must not wait for it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from monitor.config import load_config
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import write_config


def test_stop_while_the_client_bootstraps_returns_at_once(tmp_path: Path) -> None:
    # a listener that accepts connections and never answers: the bootstrap hangs
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        cfg = load_config(write_config(tmp_path, bootstrap=f"127.0.0.1:{port}", topic="p", http_port=1))
        d = Daemon(cfg, http=False)
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        time.sleep(1.5)  # inside the client's bootstrap by now
        assert t.is_alive() and not d.ready.is_set()
        d.stop()
        t.join(timeout=10)  # the bootstrap alone would hold it for much longer
        assert not t.is_alive()
    finally:
        silent.close()
