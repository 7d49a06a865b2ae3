"""eval/metrics.py: each row's statistics sum to the corpus WER and BLEU that jiwer and sacrebleu give."""

import pytest

from ctxprune.eval.metrics import (
    asr_row_stats,
    asr_scores,
    bleu_from_stats,
    bleu_row_stats,
    translation_scores,
)

REFS = ["Der Hund läuft schnell nach Hause.", "Guten Morgen, Frau Müller!", "...", "Ein, zwei, drei."]
HYPS = ["Der Hund lief schnell nach Hause", "Guten Morgen Frau Miller und so", "Hallo", ""]


def test_row_word_errors_sum_to_the_corpus_wer_and_an_empty_reference_counts_nothing():
    stats = asr_row_stats(REFS, HYPS, "de")
    assert sum(stats["errors"]) / sum(stats["words"]) == pytest.approx(asr_scores(REFS, HYPS, "de")["wer"])
    assert stats["errors"][2] == stats["words"][2] == 0  # "..." normalizes to nothing: left out of WER
    assert stats["errors"][3] == stats["words"][3] == 3  # three words, all deleted


def test_row_bleu_statistics_sum_to_the_corpus_bleu():
    refs = ["The dog runs home fast.", "Good morning, Mrs Miller!", "One, two, three.", "It is late."]
    hyps = ["The dog ran home fast.", "Good morning Mrs Miller and so", "Hello", "It is very late."]
    stats = bleu_row_stats(refs, hyps)
    assert all(len(v) == len(refs) for v in stats.values())
    corpus = bleu_from_stats({k: sum(v) for k, v in stats.items()})
    assert corpus == pytest.approx(translation_scores(refs, hyps)["bleu"])
    assert 0 < corpus < 100
