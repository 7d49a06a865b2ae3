"""Quality metrics with their reference libraries: jiwer for WER/CER, sacrebleu (13a) for BLEU/chrF."""

from __future__ import annotations

import jiwer
import sacrebleu

from ctxprune.eval.normalize import normalize


def asr_scores(references: list[str], hypotheses: list[str], language: str) -> dict[str, float]:
    """WER and CER after Whisper's normalizer (see `eval/normalize.py`)."""
    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]  # an empty normalized reference has no defined WER
    refs, hyps = [refs[i] for i in keep], [hyps[i] for i in keep]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def translation_scores(references: list[str], hypotheses: list[str]) -> dict[str, float | str]:
    """Corpus BLEU and chrF with the 13a tokenizer (flores/spm tokenizers would download)."""
    bleu = sacrebleu.metrics.BLEU(tokenize="13a")
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature())}
