"""``auto``: Evidently 0.7's default choice of drift test.

From ``evidently/legacy/calculations/stattests/registry.py``
(``_get_default_stattest``), with sizes and distinct counts taken after
missing values (NaN, ±inf, None) are dropped:

============================  ====================  ===========================
non-missing reference values  numerical column       categorical column
============================  ====================  ===========================
<= 1000                       n_unique <= 2: z      n_unique <= 2: z
                              n_unique 3..5: chisq  otherwise: chisquare
                              otherwise: ks
> 1000                        n_unique <= 5: JS     jensenshannon
                              otherwise: wasserstein
============================  ====================  ===========================

``n_unique`` counts distinct values of reference and current together, so
the choice can change from one window to the next, as it does in Evidently.
"""

from __future__ import annotations

from detectors._columns import CurrentColumn, PreparedColumn, n_unique_union

AUTO_REFERENCE_SIZE = 1000


def auto_test_name(ref: PreparedColumn, cur: CurrentColumn) -> str:
    """Name of the test Evidently would run on this reference/current pair."""
    n_values = n_unique_union(ref, cur, cap=5)
    if ref.n <= AUTO_REFERENCE_SIZE:
        if ref.kind == "numerical" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if ref.kind == "numerical":
        return "jensenshannon" if n_values <= 5 else "wasserstein"
    return "jensenshannon"
