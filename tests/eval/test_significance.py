"""eval/significance.py: bootstrap intervals of a set's cost against dense, and of the unseen-voice gap."""

import numpy as np
import pytest

from ctxprune.eval.metrics import bleu_row_stats
from ctxprune.eval.records import GroupResult
from ctxprune.eval.significance import cost_interval, cost_on_rows, gap_interval, pooled_gap


def asr_group(errors, words, digest="rows") -> GroupResult:
    return GroupResult(row_stats={"errors": list(errors), "words": list(words)}, rows_digest=digest)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 20, 300)
    dense = rng.binomial(words, 0.3)
    return words, dense


def test_a_set_equal_to_dense_costs_exactly_nothing(pair):
    words, dense = pair
    assert cost_interval(asr_group(dense, words), asr_group(dense, words), "transcribe") == (0.0, 0.0)


def test_the_interval_holds_the_point_figure_and_excludes_zero_for_a_clear_rise(pair):
    words, dense = pair
    worse = np.minimum(dense + 1, words)  # about one more error per row: a rise of several points
    point = 100 * (worse.sum() - dense.sum()) / words.sum()
    low, high = cost_interval(asr_group(worse, words), asr_group(dense, words), "transcribe")
    assert 0 < low < point < high
    # pairing: the same rows resampled together give a narrower interval than the rise's size
    assert high - low < point


def test_rows_that_differ_cannot_be_paired(pair):
    words, dense = pair
    assert cost_interval(asr_group(dense, words, "a"), asr_group(dense, words, "b"), "transcribe") is None
    assert cost_interval(GroupResult(), asr_group(dense, words), "transcribe") is None


def test_a_bleu_drop_interval_from_row_statistics():
    refs = [f"the cat number {i} sat on the red mat near the door" for i in range(60)]
    good = [f"the cat number {i} sat on the red mat near a door" for i in range(60)]
    bad = [f"a cat {i} sat on a mat" for i in range(60)]
    g = GroupResult(row_stats=bleu_row_stats(refs, good), rows_digest="x")
    b = GroupResult(row_stats=bleu_row_stats(refs, bad), rows_digest="x")
    low, high = cost_interval(b, g, "translate")
    assert 0 < low <= high  # the bad set's BLEU is lower on every resample
    assert cost_interval(g, b, "translate")[1] < 0  # and the good one's "drop" is negative


def test_the_gap_interval_is_wide_where_one_split_is_noisy(pair):
    words, dense = pair
    rng = np.random.default_rng(1)
    noisy = np.clip(dense + rng.integers(-2, 3, len(dense)), 0, words)  # no systematic rise, much noise
    test = (asr_group(dense, words), asr_group(dense, words))  # no cost on the test split
    low, high = gap_interval(test, (asr_group(noisy, words), asr_group(dense, words)))
    point = 100 * (noisy.sum() - dense.sum()) / words.sum()
    assert low < point < high
    assert high - low > 1.0  # a point's change is within noise here
    assert gap_interval(test, (GroupResult(), asr_group(dense, words))) is None


def test_the_cost_on_a_slice_of_rows_is_that_rows_figure(pair):
    words, dense = pair
    worse = dense.copy()
    worse[:100] = np.minimum(dense[:100] + 1, words[:100])  # errors added to the first 100 rows only
    model, ref = asr_group(worse, words), asr_group(dense, words)
    head = cost_on_rows(model, ref, "transcribe", slice(100))
    assert head == pytest.approx(100 * (worse[:100].sum() - dense[:100].sum()) / words[:100].sum())
    assert head > 0 and cost_on_rows(model, ref, "transcribe", slice(100, None)) == 0
    assert cost_on_rows(model, ref, "transcribe", slice(None)) == pytest.approx(
        100 * (worse.sum() - dense.sum()) / words.sum()
    )
    assert cost_on_rows(model, asr_group(dense, words, "other rows"), "transcribe", slice(None)) is None
    assert cost_on_rows(model, ref, "transcribe", slice(400, None)) is None  # no rows there


def test_a_gap_common_to_every_language_is_clearer_pooled_than_in_any_one():
    rng = np.random.default_rng(2)
    test, unseen, widths = [], [], []
    for _ in range(5):  # five languages, 100 rows each way; new voices add an error on a third of rows
        words = rng.integers(5, 20, 100)
        dense = rng.binomial(words, 0.3)
        noisy = np.clip(dense + rng.integers(-2, 3, 100), 0, words)
        worse = np.clip(noisy + (rng.random(100) < 1 / 3), 0, words)
        test.append((asr_group(noisy, words), asr_group(dense, words)))
        unseen.append((asr_group(worse, words), asr_group(dense, words)))
        low, high = gap_interval(test[-1], unseen[-1])
        widths.append(high - low)
    point, (low, high) = pooled_gap(zip(test, unseen, strict=True))

    def rise(pairs) -> float:  # WER points of the set against dense over every row of every language
        extra = sum(sum(s.row_stats["errors"]) - sum(d.row_stats["errors"]) for s, d in pairs)
        return 100 * extra / sum(sum(d.row_stats["words"]) for _, d in pairs)

    assert point == pytest.approx(rise(unseen) - rise(test))  # the word-weighted gap over all rows
    assert 0 < low < point < high  # the added errors show, pooled
    assert high - low < min(widths)  # narrower than any one language's interval
    unrecorded = [unseen[0], (GroupResult(), unseen[1][1]), *unseen[2:]]
    assert pooled_gap(zip(test, unrecorded, strict=True)) is None  # no row statistics
