"""Walk the registry: every test documented, complete metadata, reachable by name."""

from __future__ import annotations

import math
import pkgutil

import numpy as np
import pytest

import detectors
from detectors import ColumnSpec, all_tests, column_drift, get_test, list_tests, prepare_reference
from detectors.drift.registry import register_test

REQUIRED = {
    "ks",
    "wasserstein",
    "psi",
    "jensenshannon",
    "kl_div",
    "hellinger",
    "chisquare",
    "z",
    "fisher_exact",
    "g_test",
    "TVD",
    "anderson",
    "cramer_von_mises",
    "mannw",
    "ed",
    "es",
    "t_test",
}


def test_registry_holds_the_issue_list():
    assert REQUIRED <= set(list_tests())
    assert "auto" not in list_tests()
    assert list(list_tests()) == sorted(list_tests())


@pytest.mark.parametrize("name", list_tests())
def test_each_test_is_documented_and_reachable(name):
    t = get_test(name)
    assert t.name == name
    assert len(t.description) > 40 and "threshold" in t.description
    assert t.score_kind in ("p_value", "distance")
    assert t.direction == ("lower" if t.score_kind == "p_value" else "higher")
    assert 0 < t.default_threshold < 1
    assert t.kinds and set(t.kinds) <= {"numerical", "categorical"}
    for alias in t.aliases:
        assert get_test(alias) is t
    # reachable from the config: a spec naming it validates and runs
    kind = t.kinds[0]
    rng = np.random.default_rng(0)
    if kind == "numerical":
        ref, cur = rng.normal(size=60), rng.normal(0.5, size=40)
    else:
        ref = rng.choice(np.array(["a", "b"], dtype=object), 60)
        cur = rng.choice(np.array(["a", "b"], dtype=object), 40)
    prepared = prepare_reference({"x": ref}, [ColumnSpec("x", kind, name)])
    res = column_drift(prepared, "x", cur)
    assert res.test == name and res.score_kind == t.score_kind
    assert math.isfinite(res.score)
    assert res.drifted == t.is_drift(res.score, t.default_threshold)


def test_unknown_test_names_the_known_ones():
    with pytest.raises(KeyError, match="known: .*ks"):
        get_test("kolmogorov")
    with pytest.raises(KeyError):
        ColumnSpec("x", "numerical", "nope")


def test_spec_rejects_a_test_for_the_wrong_kind():
    with pytest.raises(ValueError, match="does not accept categorical"):
        ColumnSpec("x", "categorical", "ks")
    with pytest.raises(ValueError, match="kind must be"):
        ColumnSpec("x", "text")


def test_registering_twice_or_undocumented_fails():
    with pytest.raises(ValueError, match="twice"):
        register_test(
            "ks", score_kind="p_value", default_threshold=0.05, kinds=("numerical",), inclusive=True
        )(lambda r, c, b: 0.0)

    def undocumented(r, c, b):
        return 0.0

    with pytest.raises(ValueError, match="docstring"):
        register_test(
            "x_undoc",
            score_kind="distance",
            default_threshold=0.1,
            kinds=("numerical",),
            inclusive=True,
        )(undocumented)


@pytest.mark.parametrize(
    ("score_kind", "inclusive", "score", "drift"),
    [
        ("p_value", True, 0.05, True),
        ("p_value", False, 0.05, False),
        ("p_value", False, 0.049, True),
        ("distance", True, 0.1, True),
        ("distance", False, 0.1, False),
        ("distance", False, 0.11, True),
        ("distance", True, math.nan, False),
        ("p_value", True, math.nan, False),
    ],
)
def test_comparison_lives_in_one_place(score_kind, inclusive, score, drift):
    t = detectors.DriftTest(
        "t", lambda r, c, b: 0.0, score_kind, 0.1, ("numerical",), inclusive, "doc"
    )
    thr = 0.05 if score_kind == "p_value" else 0.1
    assert t.is_drift(score, thr) is drift


def test_every_test_matches_evidentlys_comparison_rule():
    # Evidently: ks p<=t, cvm p<=t, energy d>t, other p-values p<t, other distances d>=t
    inclusive = {t.name: t.inclusive for t in all_tests()}
    assert inclusive["ks"] and inclusive["cramer_von_mises"]
    assert not inclusive["ed"]
    for name in (
        "chisquare",
        "z",
        "anderson",
        "es",
        "fisher_exact",
        "g_test",
        "mannw",
        "t_test",
        "TVD",
    ):
        assert not inclusive[name], name
    for name in ("wasserstein", "psi", "jensenshannon", "kl_div", "hellinger"):
        assert inclusive[name], name


def test_public_surface_is_exported():
    for name in detectors.__all__:
        assert hasattr(detectors, name), name
    public = {n for n in dir(detectors) if not n.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(detectors.__path__)}  # loaded ones are attributes
    assert public - modules <= set(detectors.__all__)
