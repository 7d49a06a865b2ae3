"""scripts/hidden_terms.py on the real Whisper base: dense measured against itself departs nowhere (also on
its own outputs), a shipped set's whole-layer skips are the ones the runtime's masks skip, its own outputs
are its greedy choices under its masks, and the decoded errors add up to the WER that the eval reports."""

import importlib.util
from pathlib import Path

import jiwer
import pytest
import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.eval.metrics import asr_scores
from ctxprune.eval.suite import eval_rows
from ctxprune.gating.predictor import GateContext
from ctxprune.gating.skip import SoftGates
from ctxprune.models.whisper_context import pooled_log_mel
from ctxprune.stack import StackSpec, load_stack
from ctxprune.train.distill import greedy_sequences
from ctxprune.train.objective import teacher_forced_logits

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("hidden_terms", ROOT / "scripts" / "hidden_terms.py")
hidden_terms = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(hidden_terms)


@pytest.fixture(scope="module")
def dense(real_whisper):
    return load_stack(StackSpec())


def test_dense_against_itself_has_no_kl_no_hidden_term_and_skips_nothing(dense, tiny_corpus):
    rows = eval_rows(tiny_corpus, "test", 1)
    terms = hidden_terms.layer_terms({"dense": dense}, tiny_corpus, rows, dense, batch_size=4)["dense"]
    assert set(terms) == {r.task for r in rows}
    for task in terms.values():
        assert task["kl"] == pytest.approx(0.0, abs=1e-6)
        assert task["hidden_per_layer"] == pytest.approx([0.0] * 6, abs=1e-6)
        assert task["skipped_whole_share"] == [0.0] * 6


def test_a_sets_whole_layer_skips_are_the_runtimes(dense, tiny_corpus):
    stack = load_stack(StackSpec(gates=ROOT / "artifacts" / "gates" / "decoder-latency-0.7-context"))
    rows = [r for r in eval_rows(tiny_corpus, "test", 2) if r.task == "transcribe"]
    terms = hidden_terms.layer_terms({"set": stack}, tiny_corpus, rows, dense, batch_size=4)["set"]
    terms = terms["transcribe"]
    feats, frames = features_for([load_audio(tiny_corpus / r.audio) for r in rows])
    mask = stack.pipeline.run(feats, frames, [r.task for r in rows], [r.language for r in rows]).mask
    names = stack.gated.gate_names
    for i in range(6):
        layer = [j for j, n in enumerate(names) if n.startswith(f"dec.{i}.")]
        skipped = (~mask[:, layer].bool().any(1)).float().mean().item()
        assert terms["skipped_whole_share"][i] == pytest.approx(skipped)
    assert max(terms["skipped_whole_share"]) == 1.0  # at 0.7 of the decoder's time, a layer goes whole
    whole = terms["skipped_whole_share"].index(1.0)
    assert terms["hidden_per_layer"][whole] > 0.0 and terms["kl"] > 0.0


def test_decoded_errors_add_up_to_the_wer_the_eval_reports(dense, tiny_corpus):
    rows = eval_rows(tiny_corpus, "test", 3)
    got = hidden_terms.decoded_errors({"dense": dense}, tiny_corpus, rows, batch_size=4)["dense"]
    spoken = [r for r in rows if r.task == "transcribe"]
    feats, frames = features_for([load_audio(tiny_corpus / r.audio) for r in spoken])
    tokens = dense.pipeline.run(feats, frames, [r.task for r in spoken], [r.language for r in spoken]).tokens
    texts = dense.loaded.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    wer = asr_scores([r.target for r in spoken], texts, spoken[0].language)["wer"]
    assert got["rows"] == len(spoken) == 3
    assert got["wer"] == pytest.approx(wer)
    assert got["substitutions"] + got["deletions"] + got["insertions"] == pytest.approx(got["wer"])
    assert 0.0 <= got["deletions_at_end"] <= got["deletions"]


CASES = [("a c", 3, 2), ("", 5, 5), ("a b c d e", 0, 0)]  # hypothesis, deleted, of those at the end


@pytest.mark.parametrize(("hypothesis", "deleted", "at_end"), CASES)
def test_deletions_at_the_end_are_those_after_the_last_spoken_word(hypothesis, deleted, at_end):
    out = jiwer.process_words("a b c d e", hypothesis)
    assert out.deletions == deleted
    assert hidden_terms.trailing_deletions(out.alignments[0]) == at_end


def test_dense_against_itself_strays_nowhere_on_its_own_outputs(dense, tiny_corpus):
    rows = eval_rows(tiny_corpus, "test", 1)
    terms = hidden_terms.own_output_terms({"dense": dense}, tiny_corpus, rows, dense, batch_size=4)["dense"]
    assert set(terms) == {r.task for r in rows}
    for task in terms.values():
        assert task["kl_on_teacher_outputs"] == pytest.approx(0.0, abs=1e-6)
        assert task["kl_on_own_outputs"] == pytest.approx(0.0, abs=1e-6)
        assert task["own_length_ratio"] == 1.0
        assert 0.0 < task["teacher_eot_prob_at_own_end"] <= 1.0


def test_a_sets_own_outputs_are_its_greedy_choices_under_its_masks(dense, tiny_corpus):
    """The on-policy sequences (`train.distill.greedy_sequences`) on the real model: teacher-forced on
    them under the same masks, the shipped 0.7 latency set predicts every labelled token."""
    stack = load_stack(StackSpec(gates=ROOT / "artifacts" / "gates" / "decoder-latency-0.7-context"))
    rows = eval_rows(tiny_corpus, "test", 2)
    feats, frames = features_for([load_audio(tiny_corpus / r.audio) for r in rows])
    tasks, languages = [r.task for r in rows], [r.language for r in rows]
    ctx = GateContext(tasks, languages, pooled_log_mel(feats, frames))
    with torch.no_grad():
        masks, out = hidden_terms.inference_masks(stack, ctx, feats, frames)
        keep = masks.values.bool()
        assert not keep.all()
        ids, labels, _ = greedy_sequences(stack.gated, dense.loaded.tokens, out, keep, languages, tasks, 64)
        gates = SoftGates(masks.values, stack.gated.gate_names)
        logits = teacher_forced_logits(stack.gated, out, ids, gates)
    at = labels != -100
    assert at.sum() > len(rows) and torch.equal(logits.argmax(-1)[at], labels[at])
