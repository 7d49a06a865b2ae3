"""Read audio files (wav, flac, ogg, mp3 via libsndfile), mix down to mono and resample to 16 kHz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ctxprune.errors import CtxpruneError

SAMPLE_RATE = 16_000
SILENCE_PEAK = 1e-4  # -80 dBFS: quieter than any 16-bit recording's noise floor


def load_audio(path: str | Path) -> np.ndarray:
    """Mono float32 at 16 kHz. Raises `CtxpruneError` for a missing, unreadable, empty or silent file."""
    path = Path(path)
    if not path.exists():
        raise CtxpruneError(f"{path}: no such file")
    if path.is_dir():
        raise CtxpruneError(f"{path}: is a directory, expected an audio file")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise CtxpruneError(f"{path}: not a readable audio file (wav, flac, ogg, mp3): {e}") from None
    audio = audio.mean(axis=1)
    if audio.size == 0:
        raise CtxpruneError(f"{path}: audio is empty")
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    if not np.isfinite(audio).all():
        raise CtxpruneError(f"{path}: audio contains NaN or infinite samples")
    if np.abs(audio).max() < SILENCE_PEAK:
        raise CtxpruneError(f"{path}: audio is silent (peak below -80 dBFS); nothing to transcribe")
    return np.ascontiguousarray(audio, dtype=np.float32)
