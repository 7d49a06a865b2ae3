"""Whisper's log-mel spectrogram with `torch.stft`, batched and device-agnostic.

Equal to HF `WhisperFeatureExtractor` (tested to 1e-4). The mel filterbank itself comes from
`transformers.audio_utils.mel_filter_bank` (Slaney scale and norm), the same one HF uses.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from transformers.audio_utils import mel_filter_bank

from ctxprune.data.audio import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE
N_FRAMES = CHUNK_SAMPLES // HOP_LENGTH


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> Tensor:
    fb = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(fb.T.astype(np.float32))  # [n_mels, n_freq]


def pad_or_trim(audio: np.ndarray, length: int = CHUNK_SAMPLES) -> np.ndarray:
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))


def log_mel(audio: Tensor, n_mels: int = 80) -> Tensor:
    """[batch, samples] waveforms (already padded to 30 s) -> [batch, n_mels, frames] log-mel."""
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels).to(audio.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def packed(chunks: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """The chunks trimmed to 30 s and laid end to end, and their lengths. Short utterances padded to
    30 s are mostly zeros: a batch of 64 is 123 MB padded and about a tenth of that packed, which is
    what crosses from loader processes and to the GPU; `padded` restores the padding there."""
    trimmed = [np.asarray(c[:CHUNK_SAMPLES], dtype=np.float32) for c in chunks]
    flat = np.concatenate(trimmed) if trimmed else np.zeros(0, np.float32)
    return torch.from_numpy(flat), torch.tensor([len(c) for c in trimmed])


def padded(flat: Tensor, lengths: Tensor, device: str | torch.device = "cpu") -> Tensor:
    """[batch, 30 s] zero-padded waveforms on `device` from `packed`'s output."""
    lengths = lengths.to(device)
    real = torch.arange(CHUNK_SAMPLES, device=lengths.device) < lengths[:, None]
    out = torch.zeros(real.shape, dtype=flat.dtype, device=lengths.device)
    out[real] = flat.to(device, non_blocking=True)  # row-major order: row 0's samples, then row 1's...
    return out


def features_for(
    chunks: list[np.ndarray], n_mels: int = 80, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """Log-mel for a list of <= 30 s chunks (computed on `device`), and how many frames of each are real
    audio (not padding)."""
    return log_mel(padded(*packed(chunks), device), n_mels), frames_of(chunks)


def frames_of(chunks: list[np.ndarray]) -> Tensor:
    """How many log-mel frames of each <= 30 s chunk are real audio."""
    return torch.tensor([min(N_FRAMES, -(-len(c) // HOP_LENGTH)) for c in chunks])
