"""SIGHUP: re-read the config file and apply what can change without a restart.

Reloadable: ``[[rules]]``, ``[notifiers.*]`` (with their secrets re-read, so a rotated
token file takes effect), ``[alerting]``, each model's ``[models.drift]`` (methods,
thresholds, share: used from the next closed window on) and ``daemon.log_level``.
Silences live in the store and apply at once, reload or not.

Everything else (Kafka, the state dir, the HTTP listener, models' features, windows,
references, retention, ...) shapes state that is already running: a new file that
changes any of it is refused as a whole, naming the first such key, and the running
config stays. So is a file that does not validate. Open windows are never touched:
their rows, positions and offsets stay in the pipeline; only how the next closed
window is judged and who hears about it change.

:func:`prepare_reload` does everything that can fail (parsing, building notifiers, the
alert engine and the prepared references) before :meth:`Reload.apply` swaps anything,
so a reload is all or nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.config import Config, ConfigError, load_config
from monitor.references.load import ReferenceSpec, load_reference
from monitor.windows.figures import PreparedModel

if TYPE_CHECKING:
    from monitor.service.daemon import Daemon

log = logging.getLogger("driftwarden.reload")

#: top-level sections a reload may change
RELOADABLE_SECTIONS = ("rules", "notifiers", "alerting")
#: keys of [daemon] a reload may change
RELOADABLE_DAEMON_KEYS = ("log_level",)
#: keys of a [[models]] table a reload may change
RELOADABLE_MODEL_KEYS = ("drift",)


class ReloadRefused(Exception):
    """The new config cannot be applied; the message says why (the old one keeps running)."""


def _first_difference(old: Any, new: Any, path: str) -> str | None:
    """The dotted path of the first difference between two dumped config values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                return sub
            found = _first_difference(old[key], new[key], sub)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return path if len(old) != len(new) else None
    return None if old == new else path


def restart_only_change(old: Config, new: Config) -> str | None:
    """The first key whose change needs a restart, or None when a reload can apply ``new``."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    for d in (a, b):
        for section in RELOADABLE_SECTIONS:
            d.pop(section, None)
        for key in RELOADABLE_DAEMON_KEYS:
            d["daemon"].pop(key, None)
        for m in d["models"]:
            for key in RELOADABLE_MODEL_KEYS:
                m.pop(key, None)
    changed = _first_difference(a, b, "")
    if changed:
        return changed
    # secrets outside the reloadable sections (Kafka's, the API token) are read once
    for name in sorted(set(old.secrets) | set(new.secrets)):
        if name.startswith("notifiers."):
            continue
        if old.secret(name) != new.secret(name):
            return name
    return None


@dataclass
class Reload:
    """A validated new config and everything built from it, ready to swap in."""

    config: Config
    alerting: Any
    prepared: dict[str, PreparedModel]
    summary: str

    def apply(self, daemon: Daemon) -> None:
        """Swap in the new config (called on the consumer thread, between polls)."""
        old = daemon.alerting
        # the outbox worker of the old wiring may be mid-run: let it finish, then share
        # its lock, so the old and the new worker never send at the same time
        lock = old._deliver_lock
        acquired = lock.acquire(timeout=60)
        try:
            self.alerting._deliver_lock = lock
            # no-data clocks go on, and the slot memory of the rules and models kept
            self.alerting.engine.continue_activity(old.engine, {m.name for m in self.config.models})
            # a reference swapped in since the reload was prepared (an upload on the HTTP
            # server's worker thread) stays: the new settings are prepared on it instead
            with daemon.pipeline._swap_lock:
                for name, pm in self.prepared.items():
                    daemon.pipeline.use_prepared(name, on_reference_in_use(daemon, name, pm))
            daemon.pipeline.config = self.config
            daemon.pipeline.on_window = self.alerting.on_window
            daemon.pipeline.on_outcome = self.alerting.flush_outcome
            daemon.pipeline.after_windows = self.alerting.finish_slots
            # transitions of a flush whose COMMIT raised: logged or dropped once its outcome is known
            self.alerting._uncommitted = old._uncommitted
            if daemon.pipeline.labels is not None:
                daemon.pipeline.labels.on_performance = self.alerting.on_performance
                daemon.pipeline.labels.slot_savepoint = self.alerting.engine.memory_savepoint
            daemon.alerting = self.alerting
            daemon.config = self.config
        finally:
            if acquired:
                lock.release()
        from monitor.logs import add_secrets, apply_log_level  # noqa: PLC0415

        apply_log_level(self.config.daemon.log_level)

        add_secrets(self.config.secrets)


def on_reference_in_use(daemon: Daemon, name: str, pm: PreparedModel) -> PreparedModel:
    """``pm`` (model ``name``'s new drift settings, prepared on the reference then in use)
    if that reference is still in use; else the same settings prepared on the one swapped
    in since (read again from its file). Called with the pipeline's swap lock held. When
    that file cannot be read or prepared the reference in use stays with its settings
    (logged as an ERROR): a reload never puts back a reference that was replaced."""
    rt = daemon.pipeline.models[name]
    in_use = rt.prepared
    if in_use.reference.sha256 == pm.reference.sha256:
        return pm
    try:
        ref = load_reference(in_use.reference.path, ReferenceSpec.from_config(pm.config))
        if ref.sha256 != in_use.reference.sha256:
            raise ValueError(f"the file {ref.path} changed on disk since it was loaded")
        return PreparedModel.build(pm.config, rt.schema, ref, in_use.version, cache=daemon.pipeline.calibration_cache)
    except Exception as exc:  # noqa: BLE001 - the reference in use stays
        log.error("model %s: reference %s replaced while the reload was prepared, and its new drift settings"
                  " cannot be prepared on it: %s; it is judged with the settings before", name, in_use.version, exc)
        return in_use


def prepare_reload(daemon: Daemon, path: Path) -> Reload:
    """Read ``path`` and build what it configures; raises :class:`ReloadRefused`."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        raise ReloadRefused(f"invalid config {path}: " + "; ".join(exc.problems)) from None
    old = daemon.config
    changed = restart_only_change(old, new)
    if changed:
        raise ReloadRefused(f"{changed} changed: restart to apply it (a reload applies rules, notifiers,"
                            " alerting, models' drift settings and daemon.log_level)")
    from monitor.service.alerting import Alerting  # noqa: PLC0415

    labels = daemon.pipeline.labels
    if labels is not None:
        # a rule the references cannot serve would be refused by the next start (status 2,
        # which systemd does not restart): refused here already
        from monitor.references.load import ReferenceError  # noqa: PLC0415
        from monitor.service.pipeline import check_label_rules  # noqa: PLC0415

        try:
            check_label_rules(new, {n: jm.reference for n, jm in labels.models.items()})
        except ReferenceError as exc:
            raise ReloadRefused(str(exc)) from None
    try:
        alerting = Alerting(new, daemon.store, clock=daemon.clock, on_event=daemon.on_event, owner=daemon.instance)
    except Exception as exc:  # noqa: BLE001 - a notifier or rule that cannot be built
        raise ReloadRefused(f"cannot build rules and notifiers: {exc}") from None
    prepared: dict[str, PreparedModel] = {}
    for new_m, old_m in zip(new.models, old.models, strict=True):
        if new_m.drift == old_m.drift:
            continue
        rt = daemon.pipeline.models[new_m.name]
        try:
            # a prepared model keeps the reference's identity, not its rows: read them again
            ref = load_reference(rt.prepared.reference.path, ReferenceSpec.from_config(new_m))
        except Exception as exc:  # noqa: BLE001
            raise ReloadRefused(f"models.{new_m.name}.drift: {exc}") from None
        in_force = rt.prepared.reference.sha256
        if ref.sha256 != in_force:  # edited on disk since it was loaded: no silent swap
            raise ReloadRefused(
                f"models.{new_m.name}.drift: the reference file {ref.path} changed on disk since it was"
                f" loaded (sha256 {in_force[:12]}, now {ref.sha256[:12]}); new drift settings need its"
                " rows: restore the file, or restart (or upload it) to use the new one")
        try:
            prepared[new_m.name] = PreparedModel.build(new_m, rt.schema, ref, rt.prepared.version,
                                                       cache=daemon.pipeline.calibration_cache)
        except Exception as exc:  # noqa: BLE001
            raise ReloadRefused(f"models.{new_m.name}.drift: {exc}") from None
    parts = [f"{len(new.rules)} rule(s)", f"{len(new.notifiers)} notifier(s)"]
    if prepared:
        parts.append("drift settings of " + ", ".join(sorted(prepared)))
    return Reload(new, alerting, prepared, ", ".join(parts))
