"""Quality metrics with their reference libraries: jiwer for WER/CER, sacrebleu (13a) for BLEU/chrF.

Besides the corpus scores, each row's sufficient statistics (word errors and reference words; BLEU's
n-gram matches, totals and lengths): summed over rows they give the corpus score again, and resampled
over rows they give its confidence interval (`eval/significance.py`)."""

from __future__ import annotations

import jiwer
import sacrebleu

from ctxprune.eval.normalize import normalize

BLEU_STATS = (
    "sys_len",
    "ref_len",
    *(f"correct_{n}" for n in range(1, 5)),
    *(f"total_{n}" for n in range(1, 5)),
)


def _normalized(references: list[str], hypotheses: list[str], language: str) -> tuple[list[str], list[str]]:
    return [normalize(r, language) for r in references], [normalize(h, language) for h in hypotheses]


def asr_scores(references: list[str], hypotheses: list[str], language: str) -> dict[str, float]:
    """WER and CER after Whisper's normalizer (see `eval/normalize.py`)."""
    refs, hyps = _normalized(references, hypotheses, language)
    keep = [i for i, r in enumerate(refs) if r]  # an empty normalized reference has no defined WER
    refs, hyps = [refs[i] for i in keep], [hyps[i] for i in keep]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def asr_row_stats(references: list[str], hypotheses: list[str], language: str) -> dict[str, list[int]]:
    """Per row: word errors (substitutions, deletions, insertions) and reference words, after the same
    normalizer; a row whose normalized reference is empty counts 0 and 0, as `asr_scores` leaves it out."""
    errors, words = [], []
    for ref, hyp in zip(*_normalized(references, hypotheses, language), strict=True):
        if not ref:
            errors.append(0)
            words.append(0)
            continue
        out = jiwer.process_words(ref, hyp)
        errors.append(out.substitutions + out.deletions + out.insertions)
        words.append(out.substitutions + out.deletions + out.hits)
    return {"errors": errors, "words": words}


def translation_scores(references: list[str], hypotheses: list[str]) -> dict[str, float | str]:
    """Corpus BLEU and chrF with the 13a tokenizer (flores/spm tokenizers would download)."""
    bleu = sacrebleu.metrics.BLEU(tokenize="13a")
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature())}


def bleu_row_stats(references: list[str], hypotheses: list[str]) -> dict[str, list[int]]:
    """Per row: BLEU's sufficient statistics with the 13a tokenizer, as `BLEU_STATS` names them
    (effective order only changes a sentence's score, not its counts)."""
    bleu = sacrebleu.metrics.BLEU(tokenize="13a", effective_order=True)
    out: dict[str, list[int]] = {k: [] for k in BLEU_STATS}
    for ref, hyp in zip(references, hypotheses, strict=True):
        s = bleu.sentence_score(hyp, [ref])
        for k, v in zip(BLEU_STATS, [s.sys_len, s.ref_len, *s.counts, *s.totals], strict=True):
            out[k].append(int(v))
    return out


def bleu_from_stats(stats: dict[str, int]) -> float:
    """Corpus BLEU (13a, exponential smoothing as `translation_scores`) from summed row statistics."""
    return sacrebleu.metrics.BLEU.compute_bleu(
        correct=[stats[f"correct_{n}"] for n in range(1, 5)],
        total=[stats[f"total_{n}"] for n in range(1, 5)],
        sys_len=stats["sys_len"],
        ref_len=stats["ref_len"],
        smooth_method="exp",
    ).score
