"""Shared fixtures: a tiny random-weight Whisper for fast unit tests, and the real prepared Whisper base."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

from ctxprune import assets
from ctxprune.data.corpus import BuildConfig, build
from ctxprune.models.whisper_tokens import WhisperTokens

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)

# Real Whisper multilingual token ids, so that tiny models share the real prompt format.
LANG_IDS = {"en": 50259, "de": 50261, "fr": 50265, "es": 50262, "it": 50274}


def tiny_generation_config() -> GenerationConfig:
    return GenerationConfig(
        decoder_start_token_id=50258,
        eos_token_id=50257,
        pad_token_id=50257,
        bos_token_id=50257,
        max_length=448,
        lang_to_id={f"<|{k}|>": v for k, v in LANG_IDS.items()},
        task_to_id={"transcribe": 50359, "translate": 50358},
        no_timestamps_token_id=50363,
        is_multilingual=True,
        suppress_tokens=[1, 2, 7, 8, 9, 10, 14, 25, 50254, 50258, 50358, 50359, 50360, 50361, 50362],
        begin_suppress_tokens=[220, 50257],
    )


def make_tiny_whisper(seed: int = 0, layers: int = 2, tied: bool = False) -> WhisperForConditionalGeneration:
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50258,
        eos_token_id=50257,
        pad_token_id=50257,
        bos_token_id=50257,
        tie_word_embeddings=tied,
    )
    model = WhisperForConditionalGeneration(config).eval()
    if not tied:  # Random init gives near-uniform logits; widen them so greedy is not decided by rounding.
        with torch.no_grad():
            model.proj_out.weight.mul_(20.0)
    model.generation_config = tiny_generation_config()
    return model


def hf_tokens(model, features, language, task, max_new_tokens, beams) -> list[list[int]]:
    """Token ids HF `generate` produces after the prompt, up to end-of-text: the reference runtime."""
    with torch.inference_mode():
        out = model.generate(
            features,
            language=language,
            task=task,
            do_sample=False,
            num_beams=beams,
            max_new_tokens=max_new_tokens,
        ).tolist()
    tokens = WhisperTokens.from_generation_config(model.generation_config)
    return [tokens.until_end(r) for r in out]


@pytest.fixture(scope="session")
def tiny_whisper() -> WhisperForConditionalGeneration:
    return make_tiny_whisper()


@pytest.fixture(scope="session")
def tiny_tokens(tiny_whisper) -> WhisperTokens:
    return WhisperTokens.from_generation_config(tiny_whisper.generation_config)


@pytest.fixture(scope="session")
def real_whisper():
    """The real Whisper base, prepared by `ctxprune model prepare` (the Makefile runs it before tests)."""
    from ctxprune import assets

    return assets.load()


@pytest.fixture()
def random_features() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 80, 3000, generator=g) * 0.5


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Whisper saved like any local HF model, with the real tokenizer."""
    path = tmp_path_factory.mktemp("tiny-model")
    make_tiny_whisper(seed=11).save_pretrained(path)
    WhisperTokenizer.from_pretrained(assets.resolve(None)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-corpus")
    build(out, BuildConfig(languages=("de",), preset="small", seed=4), workers=2)
    return out


@pytest.fixture()
def pruned_rows_loop(monkeypatch):
    """Every decoded row whose mask skips a gate reports a loop to the guard (tiny random models do not
    loop): the loop guard's fallback path, on demand. Rows decoded with every gate open never do."""
    from ctxprune.runtime.decoding import BatchDecoding

    real = BatchDecoding.decode

    def decode(self, enc, prompts, mask, options):
        out = real(self, enc, prompts, mask, options)
        return out._replace(looped=[not bool(m.all()) for m in mask])

    monkeypatch.setattr(BatchDecoding, "decode", decode)
