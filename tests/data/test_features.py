import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from ctxprune.data.audio import load_audio
from ctxprune.data.features import CHUNK_SAMPLES, N_FRAMES, features_for, packed, pad_or_trim, padded
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


def test_packed_then_padded_is_the_zero_padded_batch():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal(n).astype(np.float32) for n in (16_000, 1, CHUNK_SAMPLES + 500, 0)]
    flat, lengths = packed(chunks)
    assert lengths.tolist() == [16_000, 1, CHUNK_SAMPLES, 0]
    expected = np.stack([pad_or_trim(c) for c in chunks])
    np.testing.assert_array_equal(padded(flat, lengths).numpy(), expected)
