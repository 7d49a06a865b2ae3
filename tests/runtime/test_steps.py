"""Eager decoding steps: the prompt at once, then one token per step, track the position on the host."""

import pytest
import torch

from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.steps import EagerSteps, repeat_rows

TOKENS = [50258, 50261, 50359, 50363, 400, 11, 500]


@pytest.fixture()
def encoded(tiny_whisper, random_features):
    gw = GatedWhisper(tiny_whisper)
    with torch.inference_mode():
        return gw, gw.encode(random_features[:2])


def test_steps_equal_one_teacher_forced_pass(encoded):
    gw, enc = encoded
    tokens = torch.tensor([TOKENS] * 2)
    with torch.inference_mode():
        whole = EagerSteps(gw, enc, None, len(TOKENS))
        n = len(TOKENS)
        ref = gw.decode(tokens, torch.arange(n), whole.cache, length=n)
        steps = EagerSteps(gw, enc, None, len(TOKENS))
        out = [steps.prompt(tokens[:, :4])] + [steps.step(tokens[:, t]) for t in range(4, n)]
    assert steps.length == n
    torch.testing.assert_close(out[0], ref[:, 3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(out[1:], 1), ref[:, 4:], atol=1e-5, rtol=1e-5)


def test_a_step_past_the_cache_is_refused(encoded):
    gw, enc = encoded
    with torch.inference_mode():
        steps = EagerSteps(gw, enc, None, 4)
        steps.prompt(torch.tensor([TOKENS[:4]] * 2))
        with pytest.raises(ValueError, match="holds 4 positions"):
            steps.step(torch.tensor([400, 400]))


def test_a_row_that_skips_self_attention_writes_no_cache(encoded):
    gw, enc = encoded
    mask = torch.ones(2, len(gw.gate_names), dtype=torch.bool)
    mask[1, gw.gate_names.index("dec.0.self_attn")] = False
    with torch.inference_mode():
        steps = EagerSteps(gw, enc, MaskPlan(mask, gw.gate_names, "cpu"), 5)
        steps.prompt(torch.tensor([TOKENS[:4]] * 2))
        steps.step(torch.tensor([400, 400]))
    assert steps.cache.self_k[0][1].abs().sum() == 0 and steps.cache.self_k[0][0, :, :5].abs().sum() > 0


def test_repeat_rows_repeats_each_row_in_a_block():
    assert repeat_rows(torch.tensor([[1], [2]]), 3).flatten().tolist() == [1, 1, 1, 2, 2, 2]
