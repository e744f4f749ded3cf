"""``driftwarden run`` started with umask 022 keeps its state private: the state dir
0700, the database, its -wal/-shm and uploaded references 0600, an existing too-open
state dir restricted at start (and logged)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from monitor.demo.broker import EmbeddedBroker
from monitor.demo.data import sample
from tests.monitor.daemon_helpers import wait_for
from tests.monitor.fault_helpers import fault_config, http_port, terminate, wait_ready
from tests.store_targets import PG_MODE

pytestmark = [pytest.mark.broker]

TOKEN = "test-api-token-0123456789"


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def reference_csv() -> bytes:
    cols = sample(3000, np.random.default_rng(5))
    buf = io.StringIO()
    names = list(cols)
    buf.write(",".join(names) + "\n")
    for i in range(len(cols[names[0]])):
        buf.write(",".join(str(cols[c][i]) for c in names) + "\n")
    return buf.getvalue().encode()


def test_daemon_started_with_umask_022_keeps_state_private(broker: EmbeddedBroker, topic: str, tmp_path: Path) -> None:
    cfg = fault_config(tmp_path / "run", bootstrap=broker.bootstrap, topic=topic,
                       daemon_extra='api_token_env = "DRIFTWARDEN_TEST_API_TOKEN"')
    state = cfg.parent / "state"
    # a state dir left world-readable by an older version or by hand
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "notes.txt").write_text("left over")
    os.chmod(state / "notes.txt", 0o644)
    log = cfg.parent / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli.app", "run", "-c", str(cfg)],
            env={**os.environ, "DRIFTWARDEN_TEST_API_TOKEN": TOKEN},
            stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(0o022),  # what a shell usually gives
        )
    try:
        assert wait_ready(cfg), log.read_text()[-2000:]
        r = httpx.post(
            f"http://127.0.0.1:{http_port(cfg)}/api/v1/models/churn/references?version=v2",
            content=reference_csv(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        db = state / "driftwarden.db"
        # the SQLite files (none when the suite runs on PostgreSQL: the state dir keeps references)
        sqlite_files = () if PG_MODE else ("driftwarden.db", "driftwarden.db-wal", "driftwarden.db-shm")
        assert PG_MODE or wait_for(lambda: (state / "driftwarden.db-wal").exists(), timeout=10)
        entries = [Path(d) / n for d, dirs, files in os.walk(state) for n in (*dirs, *files)]
        modes = {str(p.relative_to(state)): mode(p) for p in entries}
        uploaded = [p for p in modes if p.startswith("references/churn/v2-")]
        assert len(uploaded) == 1, modes
        assert mode(state) == 0o700
        assert modes["references"] == modes["references/churn"] == 0o700
        for name in (*sqlite_files, "notes.txt", uploaded[0]):
            assert modes[name] == 0o600, (name, oct(modes[name]))
        # nothing in the state dir is open to group or others but the empty lock file (0644, so
        # any user's process can lock it: the folder itself is 0700)
        assert modes.pop(".driftwarden.lock") == 0o644 and (state / ".driftwarden.lock").stat().st_size == 0
        assert all(m & 0o077 == 0 for m in modes.values()), {k: oct(m) for k, m in modes.items()}
        assert PG_MODE or mode(db) == 0o600
    finally:
        rc = terminate(proc)
    assert rc == 0
    text = log.read_text()
    assert f"state dir: {state} was readable by others (mode 0755): changed to 0700" in text
    assert f"state dir: {state / 'notes.txt'} was readable by others (mode 0644): changed to 0600" in text
