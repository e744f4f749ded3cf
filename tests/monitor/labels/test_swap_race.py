"""Two reference swaps of one model at once (an upload on the HTTP server's worker thread,
and on a shared store the consumer thread following a reference another instance
registered) leave the decoder, the label join and the reference in use agreeing on
whether the model's scores are probabilities."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pandas as pd

from monitor.ingest.schema import scores_are_probabilities
from monitor.references.load import ReferenceSpec, load_reference
from tests.monitor.labels.helpers import Clock, label_config, pipeline

ROUNDS = 40


def test_concurrent_swaps_leave_one_decision_of_probabilities(tmp_path: Path) -> None:
    """Each round two threads swap the reference at once, one to a file of probabilities,
    one to a file of margins; whichever lands last is in use, and the decoder, the
    pipeline's decision and the label join's spec must all say what it decides. The
    decoder was rebuilt outside any lock from every model's schema, so a swap could
    install a decoder built before the other swap's schema change, after it: the
    decoder then judged scores by the reference not in use, until the next change."""
    cfg_path = label_config(tmp_path, n_boot=0)
    _cfg, store, p = pipeline(cfg_path, Clock())
    try:
        ref = pd.read_csv(tmp_path / "reference.csv")
        ref.to_csv(tmp_path / "probs.csv", index=False)
        ref["prediction"] = ref["prediction"] * 6 - 3  # margins
        ref.to_csv(tmp_path / "margins.csv", index=False)
        spec = ReferenceSpec.from_config(p.models["churn"].config)
        loaded = {name: load_reference(tmp_path / f"{name}.csv", spec) for name in ("probs", "margins")}
        decides = {loaded[n].sha256: scores_are_probabilities(p.models["churn"].config, loaded[n].columns)
                   for n in loaded}
        assert sorted(decides.values()) == [False, True]
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
        try:
            for i in range(ROUNDS):
                start = threading.Barrier(2)

                def swap(name: str, version: str, start: threading.Barrier = start) -> None:
                    start.wait(timeout=10)
                    p.swap_reference("churn", str(tmp_path / f"{name}.csv"), version, record=False,
                                     loaded=loaded[name])

                threads = [threading.Thread(target=swap, args=(n, f"{n}{i}")) for n in ("probs", "margins")]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=30)
                want = decides[p.models["churn"].prepared.reference.sha256]
                assert p.probabilities["churn"] == want, i
                assert p.decoder.schemas["churn"].probabilities == want, i
                assert p.decoder.typed is not None
                assert p.labels is not None and p.labels.models["churn"].spec.probabilities == want, i
        finally:
            sys.setswitchinterval(old)
    finally:
        store.close()


def test_a_reference_whose_labels_are_refused_changes_nothing(tmp_path: Path) -> None:
    """A new reference whose label column lacks ``class_of_interest`` (a retrained model's
    file labelled "yes"/"no" where the config says 1) is refused as a whole: the drift
    reference, its registration and the label reference were switched before the labels
    were read and refused, so the upload was answered with an error while the daemon
    judged windows against the refused file (and its registration outlived the file)."""
    from monitor.references.validate import ReferenceError  # noqa: PLC0415
    from storage.references import latest_reference  # noqa: PLC0415

    cfg_path = label_config(tmp_path, n_boot=0)
    _cfg, store, p = pipeline(cfg_path, Clock())
    try:
        p.register_initial_references()
        before = p.models["churn"].prepared.reference.sha256
        registered = latest_reference(store, "churn")
        assert registered is not None and registered["sha256"] == before
        ref = pd.read_csv(tmp_path / "reference.csv")
        ref["label"] = ref["label"].map({0: "no", 1: "yes"})
        ref["prediction"] = ref["prediction"] * 6 - 3  # margins: a decision that would change too
        ref.to_csv(tmp_path / "v2.csv", index=False)
        try:
            p.swap_reference("churn", str(tmp_path / "v2.csv"), "v2")
        except ReferenceError as exc:
            assert "class_of_interest" in str(exc)
        else:
            raise AssertionError("the reference was taken")
        assert p.models["churn"].prepared.reference.sha256 == before
        assert latest_reference(store, "churn") == registered
        assert p.probabilities["churn"] is True and p.decoder.schemas["churn"].probabilities
    finally:
        store.close()
