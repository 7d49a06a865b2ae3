import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from ctxprune.data.audio import load_audio
from ctxprune.data.features import N_FRAMES, features_for
from ctxprune.eval.librivox import LIBRIVOX_DIR


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    real = [load_audio(p) for p in sorted(LIBRIVOX_DIR.glob("*.wav"))[:2]]
    return [*real, (rng.standard_normal(16000 * 7) * 0.1).astype(np.float32)]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_hf_feature_extractor(n_mels):
    clips = _clips()
    ours, frames = features_for(clips, n_mels)
    hf = WhisperFeatureExtractor(feature_size=n_mels)
    ref = hf(clips, sampling_rate=16000, return_tensors="np").input_features
    assert ours.shape == (len(clips), n_mels, N_FRAMES)
    assert torch.max(torch.abs(ours - torch.from_numpy(ref))).item() < 1e-4
    assert frames[-1].item() == 700
