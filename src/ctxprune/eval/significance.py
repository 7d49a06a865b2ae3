"""How sure a quality figure is: percentile bootstrap intervals over an eval's rows (scipy.stats.bootstrap).

A pruned set's cost against dense is paired: both decoded the same rows (their `rows_digest` must match),
so the rows are resampled together and row-to-row difficulty cancels. The unseen-voice gap is the
difference of two such costs on two splits with different rows, resampled independently. Each resample
recomputes the corpus metric from summed row statistics (`eval/metrics.py`), as the point figure is."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.stats import bootstrap

from ctxprune.eval.metrics import BLEU_STATS, bleu_from_stats
from ctxprune.eval.records import GroupResult

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


def _stat_names(task: str) -> tuple[str, ...]:
    return ("errors", "words") if task == "transcribe" else BLEU_STATS


def _paired_rows(model: GroupResult, dense: GroupResult, task: str) -> np.ndarray | None:
    """Rows x (the model's statistics, then dense's), or None where the two cannot be paired."""
    if model.row_stats is None or dense.row_stats is None or model.rows_digest != dense.rows_digest:
        return None
    names = _stat_names(task)
    return np.array([model.row_stats[k] for k in names] + [dense.row_stats[k] for k in names]).T


def _cost(rows: np.ndarray, task: str) -> float:
    """WER rise in points (WER x 100) or BLEU drop, of the model's columns against dense's."""
    sums = rows.sum(axis=0)
    half = len(sums) // 2
    if task == "transcribe":
        words = max(sums[1], 1)
        return 100 * (sums[0] - sums[2]) / words
    model, dense = (dict(zip(BLEU_STATS, s.tolist(), strict=True)) for s in (sums[:half], sums[half:]))
    return bleu_from_stats(dense) - bleu_from_stats(model)


def cost_on_rows(model: GroupResult, dense: GroupResult, task: str, rows: slice) -> float | None:
    """The model's WER rise (points) or BLEU drop against dense on a slice of one group's rows (say, the
    first 300: what a smaller split drawn the same way would have said), or None where they cannot be
    paired."""
    paired = _paired_rows(model, dense, task)
    return None if paired is None or not len(paired[rows]) else _cost(paired[rows], task)


def _interval(samples: tuple[np.ndarray, ...], statistic) -> tuple[float, float]:
    result = bootstrap(
        tuple(range(len(s)) for s in samples),  # resample row indices; the statistic sums their rows
        lambda *idx: statistic(*(s[np.asarray(i, dtype=int)] for s, i in zip(samples, idx, strict=True))),
        vectorized=False,
        paired=False,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def cost_interval(model: GroupResult, dense: GroupResult, task: str) -> tuple[float, float] | None:
    """The 95% interval of the model's WER rise (points) or BLEU drop against dense on one group, or None
    where either lacks row statistics or they decoded different rows."""
    rows = _paired_rows(model, dense, task)
    if rows is None or len(rows) < 2:
        return None
    return _interval((rows,), lambda r: _cost(r, task))


def gap_interval(
    test: tuple[GroupResult, GroupResult], unseen: tuple[GroupResult, GroupResult]
) -> tuple[float, float] | None:
    """The 95% interval of (WER rise on unseen voices) - (WER rise on the test split), in points, each
    pair being (model, dense) of one transcribe group: the pooled gap of a single language."""
    gap = pooled_gap([(test, unseen)])
    return None if gap is None else gap[1]


def pooled_gap(
    languages: Iterable[tuple[tuple[GroupResult, GroupResult], tuple[GroupResult, GroupResult]]],
) -> tuple[float, tuple[float, float]] | None:
    """The unseen-voice gap over the words of every language together (WER points) and its 95% interval:
    one figure on five times the rows, so a loss that new voices cause in every language shows where one
    language's interval is too wide. Each language is ((model, dense) on the test split, the same on the
    unseen one), as `measures.split_pairs` gives them. None where a pair lacks row statistics."""
    parts = [[_paired_rows(*pair, "transcribe") for pair in pairs] for pairs in zip(*languages, strict=True)]
    if not parts or any(rows is None for rows in parts[0] + parts[1]):
        return None
    a, b = (np.concatenate(rows) for rows in parts)
    if len(a) < 2 or len(b) < 2:
        return None
    point = _cost(b, "transcribe") - _cost(a, "transcribe")
    return point, _interval((a, b), lambda x, y: _cost(y, "transcribe") - _cost(x, "transcribe"))
