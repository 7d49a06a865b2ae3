"""Real skipping in Whisper: (a) all-open equals upstream, (b) mixed-mask batches equal each row alone,
(c) a gate forced off equals a model with that branch removed, (e) FLOPs fall by the skipped costs."""

import copy

import pytest
import torch

from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import count_flops, whisper_gate_space
from ctxprune.runtime.greedy import greedy_decode

PROMPT = [50258, 50261, 50359, 50363]
TEACHER = [1042, 8330, 3440, 11, 264]


def _mask(gw, off: list[str]) -> list[bool]:
    return [name not in off for name in gw.gate_names]


def _row_masks(gw) -> list[list[str]]:
    """Four different masks: encoder and decoder skips, a branch all rows skip, and the all-open mask."""
    return [
        [],
        ["enc.0.attn", "dec.0.self_attn", "dec.1.ffn", "dec.1.cross_attn"],
        ["enc.1.ffn", "dec.0.cross_attn", "dec.1.ffn", "dec.1.self_attn"],
        ["enc.0.attn", "enc.0.ffn", "dec.0.ffn", "dec.1.ffn"],
    ]


def _teacher_forced_logits(gw, feats, plan, prompt=PROMPT, teacher=TEACHER):
    """Encode, then feed the prompt at once and the teacher tokens one by one (incremental decoding)."""
    with torch.inference_mode():
        enc = gw.encode(feats, plan)
        cache = gw.new_cache(feats.shape[0], len(prompt) + len(teacher))
        gw.prefill_cross(enc, cache, plan)
        tokens = torch.tensor([prompt] * feats.shape[0])
        n = len(prompt)
        steps = [gw.decode(tokens, torch.arange(n), cache, plan, length=n)]
        for i, t in enumerate(teacher, start=n):
            steps.append(
                gw.decode(torch.full((feats.shape[0], 1), t), torch.tensor([i]), cache, plan, length=i + 1)
            )
    return enc, torch.cat(steps, 1)


def _plan(gw, masks, device="cpu"):
    return MaskPlan(torch.tensor([_mask(gw, m) for m in masks]), gw.gate_names, device)


def _check_mixed_batch_equals_rows_alone(model, feats, tokens, atol):
    gw = GatedWhisper(model)
    masks = _row_masks(gw)
    enc, logits = _teacher_forced_logits(gw, feats, _plan(gw, masks))
    prompts = torch.tensor([tokens.prompt("de", "transcribe")] * len(masks))
    with torch.inference_mode():
        batch_tokens = greedy_decode(gw, enc, prompts, tokens, _plan(gw, masks), max_new_tokens=8)
    for r, m in enumerate(masks):
        enc_r, logits_r = _teacher_forced_logits(gw, feats[r : r + 1], _plan(gw, [m]))
        torch.testing.assert_close(enc[r : r + 1], enc_r, atol=atol, rtol=0)
        torch.testing.assert_close(logits[r : r + 1], logits_r, atol=atol, rtol=0)
        with torch.inference_mode():
            alone = greedy_decode(gw, enc_r, prompts[r : r + 1], tokens, _plan(gw, [m]), max_new_tokens=8)
        assert batch_tokens[r] == alone[0]
    # the masks matter: rows with skips differ from the all-open row's result on the same input
    _, all_open = _teacher_forced_logits(gw, feats[1:2], _plan(gw, [[]]))
    assert not torch.allclose(all_open, logits[1:2], atol=1e-3)


def _remove_branch(model, name):
    """A copy of the upstream model in which branch `name` adds nothing: its output projection is zero."""
    removed = copy.deepcopy(model)
    side, i, kind = name.split(".")
    layer = (removed.model.encoder if side == "enc" else removed.model.decoder).layers[int(i)]
    out = {"attn": layer.self_attn.out_proj, "self_attn": layer.self_attn.out_proj, "ffn": layer.fc2}.get(
        kind
    )
    out = out if out is not None else layer.encoder_attn.out_proj
    with torch.no_grad():
        out.weight.zero_()
        out.bias.zero_()
    return removed


def _check_forced_off_equals_removed(model, feats, names, atol):
    gw = GatedWhisper(model)
    for name in names:
        plan = _plan(gw, [[name]] * feats.shape[0])
        _, ours = _teacher_forced_logits(gw, feats, plan)
        tokens = torch.tensor([PROMPT + TEACHER] * feats.shape[0])
        with torch.inference_mode():
            ref = _remove_branch(model, name)(input_features=feats, decoder_input_ids=tokens).logits
        torch.testing.assert_close(ours, ref, atol=atol, rtol=0, msg=name)


def _decode_flops(gw, feats, plan, new_tokens):
    def run():
        enc = gw.encode(feats, plan)
        cache = gw.new_cache(feats.shape[0], len(PROMPT) + new_tokens)
        gw.prefill_cross(enc, cache, plan)
        n = len(PROMPT)
        gw.decode(torch.tensor([PROMPT] * feats.shape[0]), torch.arange(n), cache, plan, length=n)
        for i in range(n, n + new_tokens - 1):
            gw.decode(torch.full((feats.shape[0], 1), 264), torch.tensor([i]), cache, plan, length=i + 1)

    return count_flops(run)


def _check_flops_fall_by_skipped_costs(model, feats, masks, new_tokens=6):
    gw = GatedWhisper(model)
    space = whisper_gate_space(gw)
    dense = _decode_flops(gw, feats, None, new_tokens)
    pruned = _decode_flops(gw, feats, _plan(gw, masks), new_tokens)
    expected_saving = sum(
        cost.decode(len(PROMPT), new_tokens)
        for m in masks
        for name, cost in zip(space.names, space.costs, strict=True)
        if name in m
    )
    assert expected_saving > 0.05 * dense
    assert abs((dense - pruned) - expected_saving) <= 0.02 * expected_saving
    # the component costs also add up to the whole model
    modelled = feats.shape[0] * space.executed_flops([True] * len(space), len(PROMPT), new_tokens)
    assert abs(modelled - dense) <= 0.02 * dense


# ---------------------------------------------------------------- tiny random models


def test_all_open_mask_equals_upstream(tiny_whisper, random_features):
    gw = GatedWhisper(tiny_whisper)
    _, ours = _teacher_forced_logits(gw, random_features, _plan(gw, [[]] * 4))
    with torch.inference_mode():
        ref = tiny_whisper(
            input_features=random_features, decoder_input_ids=torch.tensor([PROMPT + TEACHER] * 4)
        )
    torch.testing.assert_close(ours, ref.logits, atol=1e-5, rtol=0)


def test_mixed_batch_equals_each_row_alone(tiny_whisper, tiny_tokens, random_features):
    _check_mixed_batch_equals_rows_alone(tiny_whisper, random_features, tiny_tokens, atol=1e-5)


def test_forced_off_equals_branch_removed(tiny_whisper, random_features):
    names = ["enc.0.attn", "enc.1.ffn", "dec.0.self_attn", "dec.1.cross_attn", "dec.0.ffn"]
    _check_forced_off_equals_removed(tiny_whisper, random_features[:2], names, atol=1e-5)


def test_skipped_cross_attention_computes_no_cross_kv(tiny_whisper, random_features):
    gw = GatedWhisper(tiny_whisper)
    plan = _plan(gw, [["dec.0.cross_attn", "dec.0.self_attn"], []])
    with torch.inference_mode():
        enc = gw.encode(random_features[:2], plan)
        cache = gw.new_cache(2, 6)
        gw.prefill_cross(enc, cache, plan)
        gw.decode(torch.tensor([PROMPT] * 2), torch.arange(len(PROMPT)), cache, plan, length=len(PROMPT))
    assert cache.cross_k[0][0].abs().sum() == 0 and cache.cross_k[0][1].abs().sum() > 0
    assert cache.self_k[0][0].abs().sum() == 0 and cache.self_k[0][1, :, :4].abs().sum() > 0


@pytest.mark.parametrize("batch", [1, 4])
def test_flops_fall_by_skipped_costs(tiny_whisper, random_features, batch):
    gw = GatedWhisper(tiny_whisper)
    masks = _row_masks(gw)[1:] + [["enc.1.attn"]]
    _check_flops_fall_by_skipped_costs(tiny_whisper, random_features[:batch], masks[:batch])


# ---------------------------------------------------------------- the real Whisper base
# Real logits reach |60|; fp32 summation order alone moves them by ~1e-4, so the real-model checks use
# atol 5e-4 (relative ~1e-5). Tiny models above hold the 1e-5 absolute bound.
REAL_ATOL = 5e-4


@pytest.fixture(scope="module")
def real_features():
    from ctxprune.data.audio import load_audio
    from ctxprune.data.features import features_for
    from ctxprune.eval.librivox import LIBRIVOX_DIR

    clips = [load_audio(p) for p in sorted(LIBRIVOX_DIR.glob("*.wav"))[:4]]
    return features_for(clips)[0]


@pytest.mark.real
def test_real_mixed_batch_equals_each_row_alone(real_whisper, real_features):
    _check_mixed_batch_equals_rows_alone(
        real_whisper.model, real_features, real_whisper.tokens, atol=REAL_ATOL
    )


@pytest.mark.real
def test_real_forced_off_equals_branch_removed(real_whisper, real_features):
    names = ["enc.3.attn", "dec.2.cross_attn", "dec.5.ffn"]
    _check_forced_off_equals_removed(real_whisper.model, real_features[:1], names, atol=REAL_ATOL)


@pytest.mark.real
@pytest.mark.parametrize("batch", [1, 4])
def test_real_flops_fall_by_skipped_costs(real_whisper, real_features, batch):
    masks = [
        ["dec.0.ffn", "dec.1.ffn", "dec.2.self_attn", "dec.3.cross_attn", "enc.5.ffn"],
        ["enc.0.attn", "enc.1.attn", "dec.4.cross_attn"],
        ["dec.5.self_attn", "dec.5.ffn", "dec.4.ffn"],
        ["enc.2.ffn", "dec.0.cross_attn", "dec.1.cross_attn"],
    ]
    _check_flops_fall_by_skipped_costs(real_whisper.model, real_features[:batch], masks[:batch])
