"""Instruction counts of the pipeline in two scenarios of ``bench/scale.py``, and their ratio.

CPU-seconds on a shared machine swing by ±20 % from run to run; the number of
instructions the pipeline executes barely moves (within 0.5 %, whatever the load). Each
scenario is built as ``bench/scale.py`` builds it (references, events, the real
Pipeline on SQLite), then its records are fed under
valgrind's callgrind, counting only the feed: the measured loop is entered through a
ctypes callback, so ``--toggle-collect=ffi_call`` collects exactly it (start-up, event
generation and imports excluded). Callgrind starts with its instrumentation off (the
imports of numpy, scipy and pandas would take minutes instrumented); the scenario turns
it on with ``callgrind_control`` once it is built, or, when that fails, is run again
instrumented from the start. Both scenarios run at once (the counts do not depend on the
load).

The ratio reads as ``bench/scale.py``'s rate ratios do: the first scenario's events per
instruction over the second's (``sliding_vs_tumbling_instr`` 0.60: a sliding-window
event costs 1/0.60 of a tumbling-window one). Instructions are not time: cache misses and
the sort's vector instructions weigh differently; it is the load-independent check of a
change, beside the CPU-second figures.

Needs valgrind (a system tool: ``apt-get install valgrind``); callgrind slows the
feed about 30-50×, so even ``--quick`` takes minutes.

    python bench/instructions.py                 # sliding vs tumbling, 200k events each, ~8-12 min
    python bench/instructions.py --quick         # 40k events each, ~3-4 min
    python bench/instructions.py models100 models1

Ends with one line, e.g. ``RESULT sliding_ginstr=15.858 tumbling_ginstr=9.562
sliding_vs_tumbling_instr=0.603`` (instructions in billions; the ratio per event).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # noqa: E402 - bench/scale.py, beside this file

#: the C function through which the measured loop is entered (libffi's, called by ctypes)
ENTRY = "ffi_call"
#: environment variable telling the child whether to turn instrumentation on itself
INSTRUMENT = "DRIFTWARDEN_BENCH_INSTRUMENT"


def child(name: str, quick: bool) -> None:
    """In the process valgrind runs: build scenario ``name``, turn callgrind's
    instrumentation on if it is off, feed the records through :data:`ENTRY`, print the
    scenario's size as JSON."""
    _, kw = scale.scenarios(scale.events(quick))[name]
    p, recs, _ = scale.prepare(kw)
    if os.environ.get(INSTRUMENT) == "later":
        instrument_now()
    failed: list[BaseException] = []

    def measured() -> None:
        try:
            scale.feed(p, recs)
        except BaseException as exc:  # noqa: BLE001 - a ctypes callback cannot raise: re-raised below
            failed.append(exc)

    ctypes.CFUNCTYPE(None)(measured)()
    if failed:
        raise failed[0]
    print(json.dumps({"events": len(recs), "windows": p.stats.windows_closed}))


def instrument_now() -> None:
    """Turn on callgrind's instrumentation of this process (``callgrind_control``, through
    valgrind's gdbserver). Meanwhile this process keeps running (polling, not blocked in a
    wait): valgrind reads the command while it runs, so no ptrace is needed. Exits with
    status 3 when the command fails."""
    try:
        proc = subprocess.Popen(["callgrind_control", "--instr=on", str(os.getpid())],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        print(f"callgrind_control could not run: {exc}", file=sys.stderr)
        sys.exit(3)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        pass
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    if proc.returncode != 0 or "OK" not in out:
        print(f"callgrind_control failed ({proc.returncode}): {out.strip()[-500:]}", file=sys.stderr)
        sys.exit(3)


def measure(name: str, quick: bool, out_dir: Path, *, later: bool = True) -> subprocess.Popen[bytes]:
    """Start scenario ``name`` under callgrind; ``later``: its instrumentation off until the
    scenario is built."""
    cmd = [
        "valgrind", "--tool=callgrind", "-q", "--collect-atstart=no", f"--toggle-collect={ENTRY}",
        f"--instr-atstart={'no' if later else 'yes'}", f"--callgrind-out-file={out_dir / name}.out",
        sys.executable, __file__, "--child", name, *(["--quick"] if quick else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", INSTRUMENT: "later" if later else "start"}
    # output to files, not pipes: two processes run at once and nobody reads a pipe meanwhile
    with open(out_dir / f"{name}.stdout", "w") as stdout, open(out_dir / f"{name}.stderr", "w") as stderr:
        return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)


def _wait(name: str, proc: subprocess.Popen[bytes], out_dir: Path) -> tuple[str, str]:
    """Scenario ``name``'s process ended: its output and errors."""
    proc.wait()
    return (out_dir / f"{name}.stdout").read_text(), (out_dir / f"{name}.stderr").read_text()


def collected(procs: dict[str, subprocess.Popen[bytes]], quick: bool, out_dir: Path) -> dict[str, dict[str, Any]]:
    """The instructions each scenario executed in the feed, and its size. A scenario whose
    instrumentation could not be turned on later runs again instrumented from the start
    (those at once)."""
    done = {name: _wait(name, proc, out_dir) for name, proc in procs.items()}
    again = {name: measure(name, quick, out_dir, later=False) for name, proc in procs.items() if proc.returncode == 3}
    for name in again:
        why = [line for line in done[name][1].splitlines() if "callgrind_control" in line]
        print(f"{name}: {(why or ['instrumentation could not be turned on'])[-1]}; running it again"
              " instrumented from the start (slower)", file=sys.stderr, flush=True)
    done.update({name: _wait(name, proc, out_dir) for name, proc in again.items()})
    procs = {**procs, **again}
    out = {}
    for name, (stdout, stderr) in done.items():
        if procs[name].returncode != 0:
            sys.exit(f"scenario {name} failed under valgrind (exit {procs[name].returncode}):\n{stderr[-3000:]}")
        text = (out_dir / f"{name}.out").read_text()
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
        instructions = int(m.group(1)) if m else 0
        if not instructions:
            sys.exit(f"callgrind collected no instructions in {ENTRY}: this Python's ctypes does not call"
                     f" libffi's {ENTRY} by that name, so the feed cannot be told apart")
        out[name] = {"instructions": instructions, **json.loads(stdout.strip().splitlines()[-1])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", default=["sliding", "tumbling"],
                    help="two scenarios of bench/scale.py (default: sliding tumbling)")
    ap.add_argument("--quick", action="store_true", help="40k events per scenario instead of 200k")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.quick)
        return
    known = scale.scenarios(scale.events(a.quick))
    if len(set(a.scenarios)) != 2 or not set(a.scenarios) <= known.keys():
        ap.error(f"give two different ones of: {', '.join(known)}")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed; this script counts instructions with it"
                 " (Debian/Ubuntu: apt-get install valgrind; Fedora: dnf install valgrind)")
    first, second = a.scenarios
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        procs = {name: measure(name, a.quick, Path(tmp)) for name in (first, second)}
        res = collected(procs, a.quick, Path(tmp))
    for name, r in res.items():
        print(f"{known[name][0]:<28} {r['instructions'] / 1e9:7.2f}G instructions  {r['events']:,} events"
              f"  {r['instructions'] / r['events']:>9,.0f} per event  windows {r['windows']:>5}", flush=True)
    per_event = {name: r["instructions"] / r["events"] for name, r in res.items()}
    result = {
        f"{first}_ginstr": res[first]["instructions"] / 1e9,
        f"{second}_ginstr": res[second]["instructions"] / 1e9,
        f"{first}_vs_{second}_instr": per_event[second] / per_event[first],
    }
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
