"""The instances sharing a store and what each is configured with.

Each running instance keeps a row ``instance:<id>`` in ``stream_state`` (its rules,
notifiers and models, each with a digest of its settings), refreshed every
:data:`ANNOUNCE_EVERY` while it runs. A row not refreshed for :data:`LIVE_FOR` is an
instance that is gone (stopped, killed, or cut off from the store); a clean stop does
not remove its row, so a restart within :data:`LIVE_FOR` (a rolling restart) does not
let the others end its alerts in between.

On a shared store this is how an instance tells "a rule (notifier) that left the
config" from "a rule (notifier) another instance still has", e.g. during a rolling
change of the config: the first ends its alerts (gives up its deliveries), the second
is left to the instance that has it. The same rows let each instance say when the
others' configs differ from its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson

from storage.db import Store
from storage.records import iso
from storage.state import save_state

PREFIX = "instance:"
#: how often a running instance refreshes its row
ANNOUNCE_EVERY = timedelta(seconds=15)
#: a row older than this is an instance that is gone
LIVE_FOR = timedelta(seconds=90)
#: rows of instances gone this long are deleted (a killed instance never removes its own)
FORGET_AFTER = timedelta(days=1)


def store_time(store: Store, fallback: datetime) -> datetime:
    """The time rows are stamped and judged by: on a shared store the database server's
    clock, the same for every instance (their own clocks may differ: one 80 s behind
    looked gone to the others between its announcements, which then ended its alerts);
    on a store of one's own, ``fallback`` (the caller's clock)."""
    if not store.shared:
        return fallback
    rows = store.query("SELECT clock_timestamp() AS t")
    got = rows[0]["t"] if rows else None
    return got if isinstance(got, datetime) else fallback


def announce(store: Store, instance: str, facts: Mapping[str, Any], now: datetime) -> None:
    """Write (or refresh) ``instance``'s row; delete rows of instances gone for
    :data:`FORGET_AFTER` (so restarts, each a new id, do not pile up). ``now``: the
    caller's clock, used on a store of one's own (see :func:`store_time`)."""
    now = store_time(store, now)
    with store.transaction():
        save_state(store, PREFIX + instance, dict(facts), at=now)
        store.execute(
            "DELETE FROM stream_state WHERE name LIKE ? AND updated_at < ?",
            (PREFIX + "%", iso(now - FORGET_AFTER)),
        )


def live_instances(store: Store, now: datetime, *, other_than: str | None = None) -> dict[str, dict[str, Any]]:
    """The facts of each instance refreshed within :data:`LIVE_FOR` of ``now`` (the store's
    time on a shared store, see :func:`store_time`), by id; ``other_than``: leave this one
    out. A row that does not parse is skipped."""
    now = store_time(store, now)
    rows = store.query(
        "SELECT name, state FROM stream_state WHERE name LIKE ? AND updated_at >= ?",
        (PREFIX + "%", iso(now - LIVE_FOR)),
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        who = str(r["name"])[len(PREFIX):]
        if who == other_than:
            continue
        try:
            facts = orjson.loads(r["state"])
        except orjson.JSONDecodeError:
            continue
        if isinstance(facts, dict):
            out[who] = facts
    return out


def rule_digests_elsewhere(store: Store, now: datetime, *, other_than: str | None) -> dict[str, set[str]]:
    """Each rule name live instances other than ``other_than`` have, with the digests of
    its settings they announced (``{"rules": {name: digest}}``; a name announced without
    one, as a list, maps to ``{""}``)."""
    out: dict[str, set[str]] = {}
    for facts in live_instances(store, now, other_than=other_than).values():
        rules = facts.get("rules") or ()
        for name in rules:
            if isinstance(name, str):
                digest = rules.get(name) if isinstance(rules, dict) else ""
                out.setdefault(name, set()).add(digest if isinstance(digest, str) else "")
    return out


def names_elsewhere(store: Store, now: datetime, kind: str, *, other_than: str | None) -> set[str]:
    """The names of ``kind`` (``rules``, ``notifiers``, ``models``) that live instances other
    than ``other_than`` have."""
    return {
        n for facts in live_instances(store, now, other_than=other_than).values()
        for n in (facts.get(kind) or ()) if isinstance(n, str)
    }
