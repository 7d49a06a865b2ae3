"""Mask policies and the two-stage order, on a toy gate space (no model)."""

import pytest
import torch

from ctxprune.errors import CtxpruneError
from ctxprune.gating.policy import (
    HARD,
    DenseMasks,
    MaskPolicy,
    Masks,
    RandomMasks,
    StaticMasks,
    StraightThrough,
    encoder_then_late,
    policy_for,
    two_stage,
)
from ctxprune.gating.predictor import GateContext, GatePredictor
from ctxprune.gating.random_gates import RandomGates
from ctxprune.gating.straight_through import inference_gates

from .test_predictor import SPACE, _config, _ctx


def _predictor(**kw) -> GatePredictor:
    torch.manual_seed(0)
    p = GatePredictor(_config(**kw))
    with torch.no_grad():
        for name, param in p.named_parameters():
            param.normal_(std=2.0) if "head" in name or "bias" in name else None
    return p


def _run(policy, ctx, summary=None):
    summary = torch.randn(3, 8) if summary is None else summary
    encoded = []

    def encoder(early: Masks) -> torch.Tensor:
        encoded.append(early.values.clone())
        return summary

    masks, out = two_stage(policy, ctx, encoder_then_late(encoder), summarize=lambda s: s)
    return masks, encoded[0]


def test_forced_lists_override():
    policy = MaskPolicy(SPACE, force_keep=[1], force_skip=[2])
    assert policy.forced(torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])).tolist() == [[1.0, 1.0, 0.0, 1.0, 0.0]]
    assert policy.forced(torch.tensor([[True] * 5])).tolist() == [[True, True, False, True, True]]
    # regression: the base policy's masks ignored its forced lists (the single-module damage table read
    # "no damage" for every module)
    masks, _ = _run(policy, _ctx())
    assert not masks.values[:, 2].any() and masks.values[:, [0, 1, 3, 4]].all()


def test_dense_keeps_every_gate_and_has_no_late_stage():
    masks, encoded = _run(DenseMasks(SPACE), _ctx())
    assert masks.values.all() and encoded.all() and masks.keep_prob is None


def test_random_masks_repeat_with_their_seed_and_touch_only_their_prefix():
    draws = [_run(RandomMasks(RandomGates(SPACE, 0.5, "dec.", seed=7)), _ctx(batch=8))[0] for _ in range(2)]
    assert torch.equal(draws[0].values, draws[1].values)
    assert draws[0].values[:, :2].all() and not draws[0].values[:, 2:].all()


def test_predicted_masks_decide_early_gates_before_the_encoder_and_late_ones_after():
    p = _predictor(late_prefix="dec.", force_skip=["dec.0.ffn"])
    ctx, summary = _ctx(), torch.randn(3, 8)
    masks, encoded = _run(policy_for(p), ctx, summary)
    full = GateContext(ctx.task, ctx.language, ctx.audio, summary, ctx.vectors)
    expected = inference_gates(p(full))
    expected[:, SPACE.index("dec.0.ffn")] = False
    assert torch.equal(masks.values, expected)
    assert torch.equal(encoded[:, :2], expected[:, :2])
    assert (
        encoded[:, 2:4].all() and not encoded[:, 4].any()
    )  # before the encoder: late gates open, forced held


def test_straight_through_gives_hard_values_soft_gradients_and_keep_probabilities():
    p = _predictor(late_prefix="dec.")
    policy = policy_for(p)
    training = policy.in_mode(StraightThrough(tau=1.0, generator=torch.Generator().manual_seed(0)))
    assert policy.mode == HARD  # the original still decides hard masks
    masks, _ = _run(training, _ctx(), torch.randn(3, 8, requires_grad=False))
    assert set(masks.values.unique().tolist()) <= {0.0, 1.0}
    assert ((masks.keep_prob > 0) & (masks.keep_prob < 1)).all()
    (masks.values.sum() + masks.keep_prob.sum()).backward()
    assert p.early_bias.grad.abs().sum() > 0 and p.late_bias.grad.abs().sum() > 0


def test_the_encoder_summary_is_computed_only_for_policies_that_read_it():
    summaries = []

    def summarize(out):
        summaries.append(out)
        return out

    for context, reads in ((["task", "language"], False), (["task", "encoder"], True)):
        policy = policy_for(_predictor(late_prefix="dec.", context=context))
        two_stage(policy, _ctx(), encoder_then_late(lambda early: torch.randn(3, 8)), summarize)
        assert bool(summaries) == reads and policy.reads_encoder == reads
        summaries.clear()


def test_static_masks_are_one_mask_for_every_request():
    policy = policy_for(_predictor(late_prefix="dec.", context=[]))
    assert isinstance(policy, StaticMasks)
    masks, _ = _run(policy, _ctx(batch=3))
    assert (masks.values == masks.values[0]).all() and 0 < masks.values.float().mean() < 1


def test_a_policy_trains_after_deciding_in_inference_mode():
    """Regression: index tensors cached during an inference-mode pass (calibration) broke the next
    training step ('Inference tensors cannot be saved for backward')."""
    p = _predictor(late_prefix="dec.", force_keep=["enc.0.attn"], force_skip=["dec.0.ffn"])
    p.config.logit_shift = [0.5] * len(SPACE)
    policy = policy_for(p)
    with torch.inference_mode():
        _run(policy, _ctx())
    training = policy.in_mode(StraightThrough(tau=1.0, generator=torch.Generator().manual_seed(0)))
    masks, _ = _run(training, _ctx())
    masks.keep_prob.sum().backward()
    assert p.late_bias.grad.abs().sum() > 0


def test_only_early_gates_left_to_decide_read_the_context_early():
    """A decoder gate set (every early gate forced open) decides nothing early at inference, so the
    runtime may make the context that only its late gates read later (in the encoder's graph)."""
    no_audio = GateContext(["transcribe"] * 3, ["en", "de", "xx"])
    decoder_only = policy_for(_predictor(force_keep=["enc.0.attn", "enc.0.ffn"]))
    assert decoder_only.reads_context and not decoder_only.early_reads_context
    assert decoder_only.early(no_audio).values[:, :2].all()  # the audio is not read
    assert decoder_only.in_mode(StraightThrough(tau=1.0)).early_reads_context  # training samples them
    encoder = policy_for(_predictor(force_keep=["enc.0.attn"]))
    assert encoder.early_reads_context
    with pytest.raises(CtxpruneError, match="'audio'"):
        encoder.early(no_audio)
    assert not policy_for(_predictor(context=[])).early_reads_context
    assert not DenseMasks(SPACE).early_reads_context
