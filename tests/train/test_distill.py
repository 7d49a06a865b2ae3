"""Distillation: the KL and hidden terms, the joined pseudo-label and reference rows, a gate step on it."""

import pytest
import torch

from ctxprune import assets
from ctxprune.data.dataset import Collate, SpeechDataset, batch_features
from ctxprune.data.pseudo_labels import load_pseudo_labels, teacher_name
from ctxprune.gating.skip import SoftGates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.train.distill import (
    OWN_OUTPUT,
    PSEUDO_LABEL,
    REFERENCE,
    DistillWeights,
    distillation_loss,
    hidden_loss,
    join_sequences,
    kl_loss,
)
from ctxprune.train.gates import OWN_OUTPUT_SLACK, GateTask
from ctxprune.train.objective import teacher_forced_logits
from tests.conftest import make_tiny_whisper


def test_kl_is_zero_for_equal_distributions_and_reads_only_target_positions():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, 1, 2, 3]])
    assert kl_loss(teacher, teacher, labels, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = teacher + torch.randn(2, 5, 11, generator=g)
    moved = student.clone()
    moved[0, 0] += 100.0  # a position without a label
    assert kl_loss(student, teacher, labels, 2.0) > 0.01
    assert kl_loss(moved, teacher, labels, 2.0).item() == pytest.approx(
        kl_loss(student, teacher, labels, 2.0).item()
    )


def test_hidden_loss_is_scale_free_and_zero_when_equal():
    t = [torch.randn(2, 4, 8) * 10, torch.randn(2, 4, 8) * 0.1]
    assert hidden_loss(t, t).item() == 0.0
    # each layer normalized by its own variance: a constant relative error weighs the same in both
    assert hidden_loss([x * 1.1 for x in t], t).item() == pytest.approx(0.01 * 1.0, rel=0.2)


def test_join_puts_every_utterance_once_then_the_reference_rows():
    batch = {
        "teacher_input_ids": torch.tensor([[1, 2, 3], [1, 2, 0]]),
        "teacher_labels": torch.tensor([[-100, 3, 9], [-100, 9, -100]]),
        "decoder_input_ids": torch.tensor([[1, 2, 5, 6], [1, 2, 0, 0]]),
        "labels": torch.tensor([[-100, 5, 6, 9], [-100, -100, -100, -100]]),  # row 1: no reference
    }
    ids, labels, utterance, source = join_sequences(batch, with_references=True)
    assert utterance.tolist() == [0, 1, 0] and source.tolist() == [PSEUDO_LABEL, PSEUDO_LABEL, REFERENCE]
    assert ids.shape == labels.shape == (3, 4)
    assert labels[0].tolist() == [-100, 3, 9, -100]  # padded with no label
    assert labels[2].tolist() == [-100, 5, 6, 9]
    # on an on-policy step the student's own outputs come between the two, one per utterance
    own = {
        "own_input_ids": torch.tensor([[1, 2, 7, 8, 8]]).repeat(2, 1),
        "own_labels": torch.full((2, 5), -100),
    }
    ids, labels, utterance, source = join_sequences({**batch, **own}, with_references=True)
    assert utterance.tolist() == [0, 1, 0, 1, 0] and ids.shape == labels.shape == (5, 5)
    assert source.tolist() == [PSEUDO_LABEL, PSEUDO_LABEL, OWN_OUTPUT, OWN_OUTPUT, REFERENCE]
    assert ids[2].tolist() == [1, 2, 7, 8, 8] and labels[4].tolist() == [-100, 5, 6, 9, -100]


@pytest.fixture()
def distill_batch(tiny_corpus, tiny_model_dir, tiny_labels):
    loaded = assets.load(str(tiny_model_dir))
    labels = load_pseudo_labels(tiny_corpus, teacher_name(str(tiny_model_dir)))
    data = SpeechDataset(str(tiny_corpus), "train", with_reference=False)
    collate = Collate(80, loaded.tokenizer, loaded.tokens, pseudo_labels=labels, waveforms=True)
    return loaded, collate([data[i] for i in range(4)])


def test_the_student_with_every_gate_open_is_the_teacher(distill_batch):
    loaded, batch = distill_batch
    gw = GatedWhisper(loaded.model.eval())
    encoder = gw.encode(batch_features(batch, gw.device, 80))
    n = len(gw.gate_names)
    weights = DistillWeights(kl=1.0, label=0.5, hidden=1.0)
    args = (gw, batch, encoder, lambda: encoder)
    same, logs = distillation_loss(*args, torch.ones(4, n), weights, torch.no_grad)
    assert logs["kl"] == pytest.approx(0.0, abs=1e-5) and logs["hidden"] == pytest.approx(0.0, abs=1e-6)
    keep = torch.ones(4, n)
    keep[:, gw.gate_names.index("dec.0.cross_attn")] = 0.0
    keep.requires_grad_(True)
    pruned, logs = distillation_loss(*args, keep, weights, torch.no_grad)
    assert logs["kl"] > 1e-4 and logs["hidden"] > 1e-4 and pruned > same
    pruned.backward()
    assert keep.grad.abs().sum() > 0  # the teacher's signal reaches the gates


def test_a_gate_step_distills_on_rows_without_a_reference(quick, tiny_tokens, distill_batch):
    _, batch = distill_batch
    batch = {**batch, "labels": torch.full_like(batch["labels"], -100)}  # as if no row had a reference
    # a model of its own: the LoRA is injected in place, and the session's tiny model must stay plain
    task = GateTask(
        make_tiny_whisper(), quick(where="decoder", train_lora=True, hidden_weight=0.5), tiny_tokens
    )
    loss, logs = task.loss(batch, step=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and {"kl", "hidden"} <= set(logs) and "label_ce" not in logs
    assert task.predictor.late_bias.grad.abs().sum() > 0
    lora = [p for n, p in task.peft.named_parameters() if "lora_B" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


def test_an_on_policy_step_distills_on_the_students_own_greedy_outputs(quick, tiny_tokens, distill_batch):
    """The own outputs are what the student decodes under the masks it trains with at that step:
    teacher-forced on them with those masks, it predicts every labelled token (greedy is argmax)."""
    _, batch = distill_batch
    task = GateTask(
        make_tiny_whisper(), quick(where="decoder", train_lora=True, onpolicy_every=2), tiny_tokens
    )
    assert [task.onpolicy_at(s) for s in range(4)] == [True, False, True, False]
    assert not GateTask(
        make_tiny_whisper(), quick(where="decoder", target_warmup=3, onpolicy_every=1), tiny_tokens
    ).onpolicy_at(2)  # not while the target still rises
    gw, n = task.gw, len(task.gw.gate_names)
    keep = torch.ones(4, n)
    keep[1:, gw.gate_names.index("dec.0.ffn")] = 0.0  # rows that differ in their masks
    keep[2, gw.gate_names.index("dec.1.self_attn")] = 0.0
    encoder = gw.encode(batch_features(batch, gw.device, 80))
    task.train()
    own, logs = task.own_outputs(batch, encoder, keep)
    assert gw.model.training  # the decode ran without dropout and left the model as it found it
    labels = own["own_labels"]
    with torch.no_grad():
        gw.model.eval()
        logits = teacher_forced_logits(
            gw, encoder, own["own_input_ids"], SoftGates(keep, task.predictor.space.names)
        )
    at = labels != -100
    assert at.sum() > 0 and torch.equal(logits.argmax(-1)[at], labels[at])
    taught = (batch["teacher_labels"] != -100).sum(1)
    assert (at.sum(1) <= taught.max() + OWN_OUTPUT_SLACK).all()
    assert logs["own_length_ratio"] == pytest.approx(at.sum().item() / taught.sum().item())
    ended = [row[row != -100][-1].item() == tiny_tokens.eot for row in labels]
    assert logs["own_ended"] == pytest.approx(sum(ended) / 4)
    # the whole step: the own rows join the KL, and its gradient reaches the gates and the LoRA
    gw.model.train()
    loss, logs = task.loss(batch, step=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert {"kl", "kl_own", "own_length_ratio", "own_ended"} <= set(logs) and torch.isfinite(loss)
    assert task.predictor.late_bias.grad.abs().sum() > 0
    assert "kl_own" not in task.loss(batch, step=1, generator=torch.Generator().manual_seed(0))[1]


def test_sequences_that_share_an_utterance_share_its_cross_attention_keys():
    """Keeping K/V once per utterance (its rows stacked along the query axis) gives the logits and the
    gradients of repeating the encoder output per row, also when utterances have unequal row counts."""
    gw = GatedWhisper(make_tiny_whisper())  # its own: other tests freeze or step the shared one
    torch.manual_seed(0)
    encoder_out = torch.randn(3, gw.config.max_source_positions, gw.config.d_model)
    utterance = torch.tensor([0, 1, 1, 0, 1, 2])  # utterance 1 has three rows, utterance 2 one
    ids = torch.randint(0, gw.config.vocab_size, (6, 5))
    weight = gw.decoder.layers[0].encoder_attn.k_proj.weight
    runs = {}
    for name in ("shared", "repeated"):
        source = encoder_out.clone().requires_grad_(True)
        if name == "shared":
            logits = teacher_forced_logits(gw, source, ids, utterance=utterance)
        else:
            logits = teacher_forced_logits(gw, source.index_select(0, utterance), ids)
        logits.square().mean().backward()
        runs[name] = (logits.detach(), source.grad, weight.grad.clone())
        weight.grad = None
    for shared, repeated in zip(runs["shared"], runs["repeated"], strict=True):
        torch.testing.assert_close(shared, repeated)
