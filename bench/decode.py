"""Decoding alone: one 10k-record batch of ~25-column JSON events spread over 1, 10, 100
and 1,000 models (each its own schema of the same shape), through the real
:class:`monitor.ingest.decode.BatchDecoder`; fastest of 7 runs by CPU time.

Models of one message shape are read in one pass per column and then split, so the
cost should hardly grow with the number of models. Ends with one line:
``RESULT decode1_ms=… decode100_ms=… decode1000_ms=… decode100_vs_1=…`` (the ratio is
the 1-model time over the 100-model time: 1.0 means models cost nothing).

    python bench/decode.py            # a few seconds
    python bench/decode.py --quick    # 3 runs per size instead of 7
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import BASE, Rec, columns, make_events  # noqa: E402

from monitor.config import ModelConfig  # noqa: E402
from monitor.ingest.decode import BatchDecoder  # noqa: E402
from monitor.ingest.schema import ModelSchema  # noqa: E402


def batch_ms(models: int, n: int = 10_000, repeats: int = 7) -> float:
    """CPU milliseconds to decode one batch of ``n`` records over ``models`` models (fastest run)."""
    num, cat = columns(25)
    schemas = {
        f"m{m}": ModelSchema.from_config(ModelConfig.model_validate(
            {"name": f"m{m}", "reference": "ref.csv", "features": {"numerical": num, "categorical": cat}}
        ))
        for m in range(models)
    }
    dec = BatchDecoder(schemas, prediction_names=dict.fromkeys(schemas, "prediction"))
    recs = [Rec("t", 0, i, BASE + 86_400_000, v) for i, v in enumerate(make_events(n, models, num, cat, 10_000))]
    now = datetime.fromtimestamp(BASE / 1000 + 86_400, UTC)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        out, dead = dec.decode(recs, now=now)
        best = min(best, time.process_time() - t0)
        if dead or sum(map(len, out.values())) != n:
            raise SystemExit(f"{models} models: {len(dead)} dead letters; the batch should decode whole")
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 runs per size instead of 7")
    repeats = 3 if ap.parse_args().quick else 7
    got = {}
    for k in (1, 10, 100, 1000):
        got[k] = batch_ms(k, repeats=repeats)
        print(f"{k:>5} model(s): {got[k]:6.1f} ms per 10k-record batch", flush=True)
    print(f"RESULT decode1_ms={got[1]:.1f} decode100_ms={got[100]:.1f} decode1000_ms={got[1000]:.1f} "
          f"decode100_vs_1={got[1] / got[100]:.3f}")


if __name__ == "__main__":
    main()
