"""The label join's lookup by id on a shared PostgreSQL store whose labels and
predictions topics have different partition counts (README "Scaling out").

There, an instance joins labels of predictions another instance stored; the ids it
does not hold in memory are read from the store
(:func:`storage.labels.held_predictions_by_id`). The table has no index by id
(migration 13), so that read goes through every held prediction of the model, once
per flush with such labels. This bench fills an embedded PostgreSQL with N held
predictions of one model and times that read for 500 ids (one of them held), against
its limit: the store's ``statement_timeout`` (a read slower than it fails the flush).

    python bench/split_lookup.py                    # 1M and 10M held predictions, ~1 min
    python bench/split_lookup.py --sizes 100000     # any sizes

Ends with: RESULT lookup_s_<size>=… timeout_ratio=… (the largest size's best read over
the default statement timeout; under 1 means the read fits).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, not an installed copy

from monitor.config import StorageConfig  # noqa: E402
from monitor.demo.postgres import EmbeddedPostgres  # noqa: E402
from storage import labels as db  # noqa: E402
from storage.postgres import PostgresStore  # noqa: E402
from storage.schema import LATEST_VERSION, WRITER_SETTING  # noqa: E402

#: ids looked up per read (a flush's labels the instance did not find in memory)
IDS = 500


def fill(url: str, held: int) -> None:
    """``held`` predictions of model ``m`` awaiting labels, ids as md5 hex (random order
    relative to their event times, as UUIDs are)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET {WRITER_SETTING} = '{LATEST_VERSION}'")  # the trigger of migration 13
        conn.execute("TRUNCATE label_predictions")
        conn.execute(
            "INSERT INTO label_predictions (model, ts, event_id, version, segments, prediction)"
            " SELECT 'm', 1700000000000 + g, md5(g::text), 'v1', '', to_jsonb(0.5)"
            " FROM generate_series(1, %s) g",
            (held,),
        )
        conn.execute("VACUUM ANALYZE label_predictions")


def lookup_seconds(store: PostgresStore, repeat: int = 3) -> float:
    """The best of ``repeat`` reads of :data:`IDS` ids, one of them held (``md5('1')``)."""
    ids = [uuid.uuid4().hex for _ in range(IDS - 1)] + ["c4ca4238a0b923820dcc509a6f75849b"]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = db.held_predictions_by_id(store, "m", ids)
        best = min(best, time.perf_counter() - t0)
        if len(found) != 1:
            raise SystemExit(f"expected the one held id among {IDS}, found {len(found)}")
    return best


def run(sizes: list[int]) -> dict[int, float]:
    """Each size's best read time (s), on a fresh embedded server."""
    folder = Path(tempfile.mkdtemp(prefix="split-lookup-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = EmbeddedPostgres(folder).start()
    try:
        url = pg.url(pg.create_database())
        store = PostgresStore(url)
        try:
            out = {}
            for n in sizes:
                t0 = time.perf_counter()
                fill(url, n)
                out[n] = lookup_seconds(store)
                print(f"{n:>12,} held predictions: filled in {time.perf_counter() - t0:5.1f}s,"
                      f" lookup of {IDS} ids {out[n]:.3f}s", flush=True)
            return out
        finally:
            store.close()
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], metavar="N",
                    help="held predictions of the model, one measurement each")
    a = ap.parse_args()
    if any(n < 1 for n in a.sizes):
        ap.error("--sizes must be at least 1")
    got = run(sorted(a.sizes))
    timeout_s = StorageConfig().statement_timeout.total_seconds()
    cells = " ".join(f"lookup_s_{n}={s:.3f}" for n, s in got.items())
    print(f"RESULT {cells} timeout_ratio={got[max(got)] / timeout_s:.3f}")


if __name__ == "__main__":
    from monitor.demo.postgres import PostgresUnavailable

    try:
        main()
    except PostgresUnavailable as exc:  # no traceback: what to install, or why it did not start
        sys.exit(f"bench/split_lookup.py: {exc}")
