"""Reading replay files: CSV cells keep their text, a JSON line or CSV row longer than
kafka.max_message_bytes is a dead letter read in bounded memory, the outcome of a row
never depends on the chunk it falls in, and the options (--time-column, --model) work on
every format."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest

from monitor.config import Config, load_config
from monitor.service.replay import run_replay
from monitor.service.replay_source import ReplaySource, ReplaySourceError, read_lines
from storage.db import Store
from tests.monitor.daemon_helpers import stream, table_dump, write_config


def _config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9))


def _query(db: Path, sql: str) -> list[dict]:
    store = Store(db, readonly=True)
    try:
        return store.query(sql)
    finally:
        store.close()


def test_csv_cells_keep_their_text(tmp_path: Path) -> None:
    """A CSV has no types: version "1.10" stayed "1.1", the plan "NA" became missing and
    event id "007" became "7" when pandas guessed. Now the CSV replay equals the JSON
    lines replay of the same events (which is the live decoder's reading)."""
    rows = [orjson.loads(m) for m in stream(windows=3, per_window=100, shift_from=9, seed=4)]
    for i, r in enumerate(rows):
        r["version"] = "1.10"
        r["event_id"] = f"{i:03d}"
        if i % 10 == 0:
            r["features"]["plan"] = "NA"
    jsonl, csv = tmp_path / "e.jsonl", tmp_path / "e.csv"
    jsonl.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    pd.json_normalize(rows, sep=".").to_csv(csv, index=False)
    cfg = _config(tmp_path)
    run_replay(cfg, jsonl, tmp_path / "out-jsonl")
    run_replay(cfg, csv, tmp_path / "out-csv", chunk_rows=70)
    assert table_dump(tmp_path / "out-csv" / "driftwarden.db") == table_dump(tmp_path / "out-jsonl" / "driftwarden.db")
    assert _query(tmp_path / "out-csv" / "driftwarden.db", "SELECT DISTINCT version FROM windows") == [
        {"version": "1.10"}
    ]
    missing = _query(
        tmp_path / "out-csv" / "driftwarden.db",
        "SELECT m.value FROM metrics m JOIN windows w ON w.id = m.window_id WHERE w.segment = ''"
        " AND m.\"column\" = 'plan' AND m.metric = 'missing_share'",
    )
    assert missing and all(r["value"] == 0 for r in missing)


def test_a_csv_with_a_byte_order_mark_reads_as_one_without(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark: the first column was read as
    "\ufeffevent_id", and every row became a missing_field dead letter."""
    rows = [orjson.loads(m) for m in stream(windows=2, per_window=100, shift_from=9, seed=4)]
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    pd.json_normalize(rows, sep=".").to_csv(plain, index=False)
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    cfg = _config(tmp_path)
    a = run_replay(cfg, plain, tmp_path / "out-plain")
    b = run_replay(cfg, marked, tmp_path / "out-marked")
    assert (b.rows, b.dead_letters) == (a.rows, 0) == (200, 0)
    assert table_dump(tmp_path / "out-marked" / "driftwarden.db") == table_dump(tmp_path / "out-plain" / "driftwarden.db")
    lines, marked_lines = tmp_path / "plain.jsonl", tmp_path / "marked.jsonl"  # JSON lines alike
    lines.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    marked_lines.write_bytes(b"\xef\xbb\xbf" + lines.read_bytes())
    c = run_replay(cfg, marked_lines, tmp_path / "out-marked-lines")
    assert (c.rows, c.dead_letters) == (200, 0)


def test_a_row_without_ts_is_a_dead_letter_wherever_it_falls(tmp_path: Path) -> None:
    """A whole chunk of rows without ts stopped the replay ("no ts column"); now each is a
    dead letter, whatever the chunk size."""
    rows = [orjson.loads(m) for m in stream(windows=2, per_window=100, shift_from=9, seed=3)]
    for r in rows[50:120]:
        del r["ts"]
    data = tmp_path / "e.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    cfg = _config(tmp_path)
    results = [run_replay(cfg, data, tmp_path / f"out-{n}", chunk_rows=n) for n in (10, 70, 10_000)]
    assert {(r.rows, r.dead_letters) for r in results} == {(130, 70)}


def test_a_line_over_the_message_limit_is_a_dead_letter(tmp_path: Path) -> None:
    """Live, a message over kafka.max_message_bytes is ``too_large``; the replay accepted a
    200 MB line (and held it all in memory)."""
    msgs = stream(windows=2, per_window=100, shift_from=9, seed=3)
    ev = orjson.loads(msgs[10])
    ev["blob"] = "A" * (3 << 20)
    big = orjson.dumps(ev)
    data = tmp_path / "e.jsonl"
    data.write_bytes(b"\n".join([*msgs[:10], big, *msgs[10:]]) + b"\n")
    res = run_replay(_config(tmp_path), data, tmp_path / "out")
    assert (res.rows, res.dead_letters) == (200, 1)
    dead = _query(tmp_path / "out" / "driftwarden.db", 'SELECT "offset", reason, payload_size FROM dead_letters')
    assert dead == [{"offset": 10, "reason": f"too_large: {len(big)} bytes > limit 1048576",
                     "payload_size": 1048577}]


def test_reading_a_long_line_takes_memory_of_the_limit_not_of_the_line() -> None:
    line = b"x" * (40 << 20)
    fh = io.BytesIO(b'{"a":1}\r\n' + line + b"\n" + b'{"b":2}')
    tracemalloc.start()
    try:
        got = [(body[:8], len(body), size) for body, size in read_lines(fh, 1 << 20)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [(b'{"a":1}', 7, 7), (b"x" * 8, (1 << 20) + 1, 40 << 20), (b'{"b":2}', 7, 7)]
    assert peak < 8 << 20


#: replays a file after a warm-up replay of the same rows without the long line, and
#: prints the growth of the peak RSS (VmHWM) over the second run, in bytes
_PEAK_RSS_CHILD = """
import sys
from pathlib import Path
import orjson
from monitor.config import load_config
from monitor.service.replay import run_replay

def peak() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))

cfg, plain, data, out = load_config(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
run_replay(cfg, plain, out / "warm-up")
before = peak()
res = run_replay(cfg, data, out / "long")
print(orjson.dumps({"growth": peak() - before, "rows": res.rows, "dead": res.dead_letters}).decode())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_csv_row_over_the_message_limit_is_a_dead_letter_read_in_bounded_memory(tmp_path: Path) -> None:
    """Python's csv reader takes a whole line before it looks at it: a 50 MB row was read
    whole (and then refused by the cell size limit, as ``too_large`` of an unknown size).
    Now the row is a ``too_large`` dead letter with its size, the peak RSS grows by far
    less than the line, and the rows before and after it are replayed as without it."""
    rows = [orjson.loads(m) for m in stream(windows=2, per_window=100, shift_from=9, seed=3)]
    plain = tmp_path / "plain.csv"
    pd.json_normalize(rows, sep=".").to_csv(plain, index=False)
    header, first, *rest = plain.read_bytes().splitlines(keepends=True)
    long_row = b"A" * (50 << 20) + b"," * (header.count(b",") - 1) + b',"x\ny"'  # a quoted line end too
    data = tmp_path / "long.csv"
    data.write_bytes(b"".join([header, first, long_row, b"\r\n", *rest]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3]), *sys.path])}
    cfg = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9)
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, str(cfg), str(plain), str(data), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = orjson.loads(done.stdout.splitlines()[-1])
    data.unlink()
    assert (got["rows"], got["dead"]) == (200, 1)
    assert got["growth"] < 0.4 * len(long_row), got  # measured: about 4 MB; the old reader: 200 MB
    dead = _query(tmp_path / "long" / "driftwarden.db", 'SELECT "offset", reason, payload_size FROM dead_letters')
    assert dead == [{"offset": 1, "reason": f"too_large: {len(long_row)} bytes > limit 1048576",
                     "payload_size": 1048577}]
    assert table_dump(tmp_path / "long" / "driftwarden.db") == table_dump(tmp_path / "warm-up" / "driftwarden.db")


def test_the_time_column_and_model_options_on_each_format(tmp_path: Path) -> None:
    """--time-column names the event time (nested too, ``meta.at``), --model the model of
    a file without one: the tables equal those of the plain file."""
    msgs = stream(windows=3, per_window=100, shift_from=9, seed=5)
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b"\n".join(msgs) + b"\n")
    rows = []
    for m in msgs:
        r = orjson.loads(m)
        r["meta"] = {"at": r.pop("ts")}
        del r["model"]
        rows.append(r)
    jsonl, csv, parquet = tmp_path / "t.jsonl", tmp_path / "t.csv", tmp_path / "t.parquet"
    jsonl.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    flat = pd.json_normalize(rows, sep=".")
    flat.to_csv(csv, index=False)
    flat.to_parquet(parquet, index=False)
    cfg = _config(tmp_path)
    run_replay(cfg, plain, tmp_path / "out-plain")
    want = table_dump(tmp_path / "out-plain" / "driftwarden.db")
    for f in (jsonl, csv, parquet):
        out = tmp_path / f"out-{f.suffix[1:]}"
        res = run_replay(cfg, f, out, time_column="meta.at", model="churn")
        assert res.dead_letters == 0, f
        assert table_dump(out / "driftwarden.db") == want, f
    with pytest.raises(ReplaySourceError, match='no "ts" field for the event time'):
        ReplaySource(cfg, csv, received_at=datetime.now(UTC))
