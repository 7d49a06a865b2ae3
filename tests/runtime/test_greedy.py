"""Greedy decoding must produce HF `generate`'s tokens, with Whisper's token suppression."""

import pytest
import torch

from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.greedy import detect_language, greedy_decode
from tests.conftest import hf_tokens


def test_greedy_equals_hf_generate_on_tiny(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    with torch.inference_mode():
        enc = gw.encode(random_features)
    prompts = torch.tensor([tiny_tokens.prompt("de", "transcribe")] * 4)
    ours = greedy_decode(gw, enc, prompts, tiny_tokens, max_new_tokens=12)
    ref = hf_tokens(tiny_whisper, random_features, "de", "transcribe", 12, beams=1)
    assert ours == ref
    assert all(len(set(r)) > 3 for r in ours), ours  # a non-degenerate path
    for row in ours:
        assert not set(row) & set(tiny_tokens.suppress)


def test_detect_language_returns_known_codes(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    with torch.inference_mode():
        langs = detect_language(gw, gw.encode(random_features), tiny_tokens)
    assert len(langs) == 4 and set(langs) <= set(tiny_tokens.languages)


@pytest.mark.real
@pytest.mark.parametrize("task", ["transcribe", "translate"])
def test_greedy_equals_hf_generate_on_real_model(real_whisper, task):
    from ctxprune.data.audio import load_audio
    from ctxprune.data.features import features_for
    from ctxprune.eval.librivox import LIBRIVOX_DIR

    clips = [load_audio(p) for p in sorted(LIBRIVOX_DIR.glob("*.wav"))[:2]]
    feats, _ = features_for(clips)
    gw = GatedWhisper(real_whisper.model)
    with torch.inference_mode():
        enc = gw.encode(feats)
    prompts = torch.tensor([real_whisper.tokens.prompt("en", task)] * 2)
    ours = greedy_decode(gw, enc, prompts, real_whisper.tokens, max_new_tokens=64)
    ref = hf_tokens(real_whisper.model, feats, "en", task, 64, beams=1)
    assert ours == ref
