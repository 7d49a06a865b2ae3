import pytest
from transformers import WhisperTokenizer

from ctxprune import assets
from ctxprune.data.corpus import BuildConfig, build

from ..conftest import make_tiny_whisper


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
def quick(tiny_model_dir, tiny_corpus, tmp_path):
    """Settings for fast CPU runs: a few steps, tiny batches, a short final evaluation."""

    def make(**overrides):
        from ctxprune.train.config import TrainConfig

        base = {"data": str(tiny_corpus), "out": str(tmp_path / "run"), "model": str(tiny_model_dir)}
        base |= {"steps": 6, "batch_size": 4, "workers": 0, "eval_every": 0, "eval_limit": 1}
        base |= {"eval_max_tokens": 4, "save_every": 2, "log_every": 1, "warmup": 1}
        return TrainConfig(**{**base, **overrides})

    return make
