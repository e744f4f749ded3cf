"""The README's clean-machine walk-through, followed literally: its blocks, in order, in an
empty folder, as one bash script, against the real broker. Only what a reader's machine
would differ in is set from outside: KAFKA (the embedded broker's address, which the
walk-through reads), and the HTTP port (other daemons may hold 9308 on this machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker, free_port
from tests.conftest import repo_root
from tests.store_targets import PG_MODE, state_env

pytestmark = [pytest.mark.broker]

BLOCK = re.compile(r"<!-- walkthrough: (?P<what>[^>]*?) -->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)


def walkthrough() -> list[tuple[str, str]]:
    """(what, body) of each marked block of the README, in order."""
    text = (repo_root() / "README.md").read_text()
    return [(m["what"].strip(), m["body"]) for m in BLOCK.finditer(text)]


def script(blocks: list[tuple[str, str]]) -> str:
    out = ["set -euo pipefail"]
    for what, body in blocks:
        if what.startswith("file "):
            name = what.split(" ", 1)[1]
            assert "WALKTHROUGH_EOF" not in body
            out.append(f"cat > {name} <<'WALKTHROUGH_EOF'\n{body}\nWALKTHROUGH_EOF")
        elif what == "background":
            out.append(body)
            out.append("DW_PID=$!\ntrap 'kill -TERM $DW_PID 2>/dev/null; wait $DW_PID' EXIT")
        else:
            assert what == "shell", what
            out.append(body)
    return "\n".join(out) + "\n"


def test_the_readme_marks_a_complete_walkthrough() -> None:
    blocks = walkthrough()
    files = [w.split(" ", 1)[1] for w, _ in blocks if w.startswith("file ")]
    assert files == ["reference.py", "producer.py", "config.toml"]
    whats = [w for w, _ in blocks]
    assert whats.count("background") == 1
    body = "\n".join(b for _, b in blocks)
    for step in ("DRIFTWARDEN_KAFKA__BOOTSTRAP_SERVERS", "driftwarden check --pre-start", "python producer.py",
                 "driftwarden run -c config.toml &", "driftwarden windows -c config.toml"):
        assert step in body, step
    assert 'key=event["model"]' in body  # events keyed by model


def test_following_the_walkthrough_shows_windows(broker: EmbeddedBroker, tmp_path: Path) -> None:
    folder = tmp_path / "try"
    folder.mkdir()
    bin_dir = str(Path(sys.executable).parent)  # driftwarden and python of this environment
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")},
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA": broker.bootstrap,
        "DRIFTWARDEN_DAEMON__HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "COLUMNS": "80",
        **state_env(folder / "state"),  # DRIFTWARDEN_TEST_STORE=postgres: the store's url from the environment
    }
    (folder / "walkthrough.sh").write_text(script(walkthrough()))
    res = subprocess.run(["bash", "walkthrough.sh"], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "✓ config: 1 model(s), 0 rule(s), 0 notifier(s); reference(s): churn 2000 rows" in out
    # the check's lines in the README's order (the sample there once lacked two of them)
    checked = [line.split()[1] for line in out.splitlines() if line.startswith(("✓ ", "! "))]
    assert checked == ["config:", "http", "state", *([] if PG_MODE else ["database"]),
                       *(["storage"] if PG_MODE else []), "kafka:"], out
    assert "sent 4800 events" in out
    table = out[out.index("windows, newest first"):]
    assert "model churn, version v1, segment (all)" in table.splitlines()[0], table
    # whole 5-minute windows of 4 events a second (the last one closes when the stream is idle)
    rows = [line for line in table.splitlines() if re.search(r"\d\d:\d\d–\d\d:\d\d\s+1200\s", line)]
    assert 1 <= len(rows) <= 4, table
    assert (folder / "state" / "driftwarden.db").is_file() != PG_MODE
