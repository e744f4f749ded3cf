"""Stored drift scores as people are shown them: named by their statistic.

A drift score is a p-value (``ks``: drift when *below* the threshold) or a distance
(``wasserstein``: drift when *above*); as a bare number ``amount 1.14e-19`` reads like
a distance. Every list of drifted columns shown to people (Slack messages, the
``windows`` command, the daemon's log, the demo) writes them through
:func:`drifted_column_text`: ``amount (ks p=1.1e-19)``, ``income (wasserstein 0.31)``.
Machine payloads (``drifted_columns`` in webhooks and the API) keep ``test`` and
``score`` as they are.

Alert figures are shown through :func:`alert_figure_text`: a ``no_data`` alert's value and
threshold are seconds of silence, shown as durations (``1m 04s``), never as a bare ``64.3``.

Light on purpose (no numpy, no scipy): the read commands import it. The score kinds
mirror :mod:`detectors.drift`'s registry; ``tests/storage/test_scores.py`` checks that
every registered test and alias is listed here with its kind.
"""

from __future__ import annotations

import math

#: tests whose score is a p-value, with their aliases (``score_kind="p_value"``)
P_VALUE_TESTS = frozenset({
    "TVD", "anderson", "anderson_darling", "chi2", "chi_square", "chisquare", "cramer_von_mises", "cvm",
    "epps_singleton", "es", "fisher", "fisher_exact", "g", "g_test", "ks", "mann_whitney", "mannw",
    "proportions_z", "t_test", "total_variation", "ttest", "tvd", "z", "ztest",
})
#: tests whose score is a distance, with their aliases (``score_kind="distance"``)
DISTANCE_TESTS = frozenset({
    "ed", "energy_distance", "hellinger", "jensenshannon", "js", "kl", "kl_div", "psi", "wasserstein",
    "wasserstein_norm",
})


def score_text(test: str | None, score: float | None) -> str:
    """A drift score named by its statistic: ``ks p=1.1e-19`` for a p-value (2 significant
    digits), ``wasserstein 0.312`` for a distance (3).

    ``score`` None (not computed) shows as ``n/a``; a ``test`` not listed (a name from
    another build) is shown with the number as a distance is; no ``test``: the number alone.
    """
    if score is not None and test in P_VALUE_TESTS:
        return f"{test} p={score:.2g}"
    number = "n/a" if score is None else f"{score:.3g}"
    return f"{test} {number}" if test else number


def drifted_column_text(column: str, test: str | None, score: float | None) -> str:
    """One entry of a drifted-columns list: ``amount (ks p=1.1e-19)``, ``income
    (wasserstein 0.31)`` (see :func:`score_text`); the column alone without test or score."""
    if not test and score is None:
        return column
    return f"{column} ({score_text(test, score)})"


def duration_text(seconds: float | None) -> str:
    """``seconds`` as people read a duration: ``40s``, ``1m 04s``, ``2h 05m`` (whole
    seconds, cut down, never rounded up past a limit); ``n/a`` for None, NaN or infinity."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "n/a"
    h, rem = divmod(int(seconds), 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


def alert_figure_text(metric: str | None, value: float | None) -> str:
    """An alert's value or threshold for a table: a ``no_data`` alert's (seconds without
    data) as a duration (:func:`duration_text`), any other figure to 4 significant digits;
    ``-`` for None."""
    if value is None:
        return "-"
    if metric == "no_data":
        return duration_text(value)
    return f"{value:.4g}"
