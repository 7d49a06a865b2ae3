"""Beam search must produce HF `generate(num_beams=5)`'s tokens: on a tiny model tuned so that beams end
at different lengths and differ from greedy, and on the real model with real speech."""

import pytest
import torch

from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.decoding import BatchDecoding, DecodeOptions
from tests.conftest import hf_tokens, make_tiny_whisper


def _ours(model, features, language, task, max_new_tokens, beams, path="gather") -> list[list[int]]:
    gw = GatedWhisper(model)
    tokens = WhisperTokens.from_generation_config(model.generation_config)
    with torch.inference_mode():
        enc = gw.encode(features)
    prompts = torch.tensor([tokens.prompt(language, task)] * len(features))
    mask = torch.ones(len(features), len(gw.gate_names), dtype=torch.bool)
    options = DecodeOptions(beams=beams, max_new_tokens=max_new_tokens, path=path)
    return BatchDecoding(gw, tokens)(enc, prompts, mask, options)


@pytest.fixture(scope="module")
def ending_whisper():
    """Tiny Whisper whose end-of-text is likely enough that beams finish at different lengths."""
    model = make_tiny_whisper(seed=0)
    with torch.no_grad():
        model.proj_out.weight.mul_(0.1)
        model.proj_out.weight[model.generation_config.eos_token_id].mul_(4.0)
    return model


@pytest.fixture(scope="module")
def scaled_features():
    torch.manual_seed(0)
    return torch.randn(3, 80, 3000) * torch.tensor([0.1, 1.0, 3.0])[:, None, None]


@pytest.mark.parametrize("path", ["gather", "eager"])
def test_beam_equals_hf_on_tiny(ending_whisper, scaled_features, path):
    ours = _ours(ending_whisper, scaled_features, "de", "transcribe", 10, 5, path=path)
    assert ours == hf_tokens(ending_whisper, scaled_features, "de", "transcribe", 10, 5)
    greedy = _ours(ending_whisper, scaled_features, "de", "transcribe", 10, 1)
    assert ours != greedy  # the search matters here
    assert all(len(row) < 10 for row in ours)  # every best beam ended with end-of-text
    assert max(map(len, ours)) > max(map(len, greedy))  # and a longer beam beat greedy's early end


@pytest.mark.real
@pytest.mark.parametrize("task", ["transcribe", "translate"])
def test_beam_equals_hf_on_real_model(real_whisper, task):
    from ctxprune.data.audio import load_audio
    from ctxprune.data.features import features_for
    from ctxprune.eval.librivox import LIBRIVOX_DIR

    clips = [load_audio(p) for p in sorted(LIBRIVOX_DIR.glob("*.wav"))[:2]]
    feats, _ = features_for(clips)
    ours = _ours(real_whisper.model, feats, "en", task, 48, 5)
    assert ours == hf_tokens(real_whisper.model, feats, "en", task, 48, 5)
    assert all(len(row) > 5 for row in ours)
