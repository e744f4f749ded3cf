"""The other instances of a shared store: this one's config announced, theirs compared.

Every instance of a shared PostgreSQL store keeps its rules, notifiers and models (each
with a digest of its settings, the model's including its reference's content) in the
store (:mod:`storage.instances`). With that, an instance leaves the alerts and the
deliveries of a rule or notifier another live instance has to that instance, and logs a
warning once per difference it finds: a model one instance lacks dead-letters that
model's events on the partitions it holds (``unknown_model``), a rule one lacks is not
judged on those partitions, differing settings judge alike windows differently, and
instances in different Kafka consumer groups (``kafka.group_id``) each read every partition
and keep taking its claim from one another.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from monitor.config import Config
from storage.db import Store
from storage.instances import LIVE_FOR, announce, live_instances

log = logging.getLogger("driftwarden.peers")


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def rule_digests(config: Config) -> dict[str, str]:
    """Each rule's name with a digest of its settings (what instances announce and compare)."""
    return {r.name: _digest(r.model_dump(mode="json")) for r in config.rules}


def config_facts(config: Config, reference_sha256: Mapping[str, str]) -> dict[str, Any]:
    """What the other instances compare: rule and model names with a digest of their
    settings (a model's reference by content, not path: hosts may keep it elsewhere),
    notifier names. ``reference_sha256``: each model's reference file in force."""
    rules = rule_digests(config)
    models = {
        m.name: _digest({**m.model_dump(mode="json", exclude={"reference"}), "reference": reference_sha256.get(m.name)})
        for m in config.models
    }
    k = config.kafka
    stream = {"group_id": k.group_id, "predictions_topic": k.predictions_topic, "labels_topic": k.labels_topic}
    return {"rules": rules, "notifiers": sorted(config.notifiers), "models": models, "kafka": stream}


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """What differs between two instances' facts, one phrase each (empty: alike)."""
    out = []
    for kind, noun in (("models", "model"), ("rules", "rule")):
        mine, other = ours.get(kind) or {}, theirs.get(kind) or {}
        only_theirs = sorted(set(other) - set(mine))
        only_mine = sorted(set(mine) - set(other))
        changed = sorted(n for n in set(mine) & set(other) if mine[n] != other[n])
        if only_theirs:
            out.append(f"{noun}s only it has: {', '.join(only_theirs)}")
        if only_mine:
            out.append(f"{noun}s only this one has: {', '.join(only_mine)}")
        if changed:
            out.append(f"{noun}s with other settings{' or another reference' if kind == 'models' else ''}:"
                       f" {', '.join(changed)}")
    mine_k, other_k = ours.get("kafka"), theirs.get("kafka")
    if mine_k and other_k:  # an instance of an older version announces none
        for key in ("group_id", "predictions_topic", "labels_topic"):
            if mine_k.get(key) != other_k.get(key):
                out.append(f"another kafka.{key}: {other_k.get(key)!r} (this one: {mine_k.get(key)!r})")
    mine_n, other_n = set(ours.get("notifiers") or ()), set(theirs.get("notifiers") or ())
    if other_n - mine_n:
        out.append(f"notifiers only it has: {', '.join(sorted(other_n - mine_n))}")
    if mine_n - other_n:
        out.append(f"notifiers only this one has: {', '.join(sorted(mine_n - other_n))}")
    return out


def consequences(diff: tuple[str, ...] | list[str]) -> str:
    """What the differences of :func:`differences` do, for the warning."""
    said = []
    if any(d.startswith("models only") for d in diff):
        said.append("events of a model an instance lacks are dead-lettered (unknown_model) on the partitions"
                    " it holds")
    if any(d.startswith("rules only") for d in diff):
        said.append("a rule is judged only on the windows an instance that has it stores")
    if any("other settings" in d for d in diff):
        said.append("each window is judged with the settings of the instance that closes it")
    if any(d.startswith("another kafka.group_id") for d in diff):
        said.append("instances in different consumer groups each read every partition and take its claim"
                    " from the other in turn (\"partitions [...] were claimed by another instance\"): their"
                    " flushes are rolled back and their windows re-read")
    if any(d.startswith("another kafka.") and "_topic" in d.split(":", 1)[0] for d in diff):
        said.append("instances reading other topics store their windows side by side in one store")
    if any(d.startswith("notifiers only") for d in diff):
        said.append("notifications to a notifier go out from the instances that have it")
    return "; ".join(said).capitalize() + ": give every instance the same config."


class Peers:
    """Announces this instance's facts (see :func:`config_facts`) and warns, once per
    instance and difference, about the others' (called by the scheduler)."""

    def __init__(self, store: Store, instance: str, facts: Callable[[], dict[str, Any]],
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.instance = instance
        self.facts = facts
        self.clock = clock
        #: what was last said about each other instance (said again only when it changes)
        self._said: dict[str, tuple[str, ...]] = {}
        #: when announcing started failing (this clock), and whether that was said
        self._failing_since: datetime | None = None
        self._failure_said = False

    def tick(self) -> None:
        """:meth:`run_once` as the scheduler calls it: a failure is logged, not raised, and
        failing for half of LIVE_FOR is a WARNING: past LIVE_FOR the others take this
        instance as gone (they end the alerts of rules only it has and give up deliveries
        to notifiers only it has)."""
        try:
            self.run_once()
        except Exception as exc:  # noqa: BLE001 - a store away is also reported by the flushes
            now = self.clock()
            self._failing_since = self._failing_since or now
            failing = (now - self._failing_since).total_seconds()
            if failing >= LIVE_FOR.total_seconds() / 2 and not self._failure_said:
                self._failure_said = True
                log.warning("peers: this instance has not announced itself for %.0f s (%s): after %.0f s the"
                            " other instances of the store take it as gone, and end the alerts of rules only it"
                            " has and give up deliveries to notifiers only it has", failing, exc,
                            LIVE_FOR.total_seconds())
            else:
                log.debug("peers: %s", exc)
            return
        if self._failure_said:
            log.info("peers: this instance announces itself again")
        self._failing_since, self._failure_said = None, False

    def run_once(self) -> list[str]:
        """Announce, compare; the warnings logged now (each also in the log)."""
        now = self.clock()
        ours = self.facts()
        announce(self.store, self.instance, ours, now)
        said = []
        others = live_instances(self.store, now, other_than=self.instance)
        for who, theirs in sorted(others.items()):
            diff = tuple(differences(ours, theirs))
            if diff and self._said.get(who) != diff:
                line = (f"instance {who} shares this store with another config: {'; '.join(diff)}. "
                        + consequences(diff) + " (README \"Scaling out\")")
                log.warning("%s", line)
                said.append(line)
            self._said[who] = diff
        for gone in set(self._said) - set(others):
            del self._said[gone]
        return said
