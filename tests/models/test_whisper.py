"""GatedWhisper with no gates must be the upstream model, exactly (fp32, atol 1e-5)."""

import pytest
import torch

from ctxprune.models.whisper import GatedWhisper, whisper_gate_names


def _hf_logits(model, features, tokens):
    with torch.inference_mode():
        return model(input_features=features, decoder_input_ids=tokens).logits


def _our_logits(gw, features, tokens, step_by_step: bool):
    with torch.inference_mode():
        enc = gw.encode(features)
        cache = gw.new_cache(features.shape[0], tokens.shape[1])
        gw.prefill_cross(enc, cache)
        n = tokens.shape[1]
        if not step_by_step:
            return gw.decode(tokens, torch.arange(n), cache, length=n)
        steps = [gw.decode(tokens[:, t : t + 1], torch.tensor([t]), cache, length=t + 1) for t in range(n)]
        return torch.cat(steps, 1)


def test_gate_names_are_stable(tiny_whisper):
    names = whisper_gate_names(tiny_whisper.config)
    assert names[:2] == ["enc.0.attn", "enc.0.ffn"]
    assert names[-3:] == ["dec.1.self_attn", "dec.1.cross_attn", "dec.1.ffn"]
    assert len(names) == 2 * 2 + 2 * 3


@pytest.mark.parametrize("step_by_step", [False, True], ids=["parallel", "incremental"])
def test_ungated_equals_upstream(tiny_whisper, random_features, step_by_step):
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 400, 11, 500, 77]] * 4)
    ref = _hf_logits(tiny_whisper, random_features, tokens)
    ours = _our_logits(GatedWhisper(tiny_whisper), random_features, tokens, step_by_step)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_fixed_shape_decoding_equals_the_prefix_read(tiny_whisper, random_features):
    """Attention over the whole cache under a mask (what a CUDA graph captures) equals reading only the
    cached prefix, for the prompt and for single steps at device-side positions."""
    gw = GatedWhisper(tiny_whisper)
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 400, 11, 500, 77]] * 4)
    ref = _our_logits(gw, random_features, tokens, step_by_step=True)
    with torch.inference_mode():
        cache = gw.new_cache(4, 16)  # longer than needed: the unwritten tail must stay invisible
        gw.prefill_cross(gw.encode(random_features), cache)
        out = [gw.decode(tokens[:, :4], torch.arange(4), cache)]
        out += [gw.decode(tokens[:, t : t + 1], torch.tensor([t]), cache) for t in range(4, 8)]
    torch.testing.assert_close(torch.cat(out, 1), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.real
def test_ungated_equals_upstream_on_real_model(real_whisper, random_features):
    tokens = torch.tensor([[50258, 50261, 50359, 50363, 1042, 8330, 3440]] * 2)
    feats = random_features[:2]
    ref = _hf_logits(real_whisper.model, feats, tokens)
    ours = _our_logits(GatedWhisper(real_whisper.model), feats, tokens, step_by_step=True)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
