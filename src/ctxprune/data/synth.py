"""Speech from text with one of the voice families (`voices.py`), then the acoustic variety a real
corpus has: speed and pitch (the synthesizer's own controls), additive noise at a chosen SNR, and silence
padding; 16 kHz FLAC out.

Everything random is decided in the plan (see `corpus.py`), so synthesis is a pure function of an
`Utterance`: the same plan gives byte-identical files for the same synthesizers and libsndfile.

The synthesizers run as one program call per sentence. espeak-ng's C library (ctypes) was 3x faster, but
its output for a sentence depended on the sentences synthesized before it in the same process, which
would make the corpus depend on how work was spread over workers; reproducibility wins.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.data.voices import ESPEAK_VOICES, speak

LANGUAGES = tuple(ESPEAK_VOICES)  # the corpus languages: each has an espeak-ng voice and templates


@dataclass(frozen=True)
class Utterance:
    id: str
    language: str
    text: str
    english: str | None  # None: a monolingual sentence, no English reference (training only)
    split: str
    voice: str  # espeak-ng variant ("f3"), MBROLA voice ("de6") or Pico's language voice ("de-DE")
    speed: int  # words per minute (espeak, mbrola) or percent (pico)
    pitch: int  # 0-99 (espeak, mbrola) or percent (pico)
    snr_db: float
    pad_before: float  # seconds of silence (with noise) before and after the speech
    pad_after: float
    seed: int
    source: str  # "gettext:<catalog>", "template:<id>" or "mono:<source>"
    family: str = "espeak"  # the voice family (voices.FAMILIES); plans of issues 1-12 have espeak only

    @property
    def audio_path(self) -> str:
        return f"audio/{self.language}/{self.id}.flac"


def render(utt: Utterance) -> np.ndarray:
    """The final 16 kHz waveform: padded, noised at `snr_db`, resampled, peak-limited."""
    speech, rate = speak(utt.family, utt.language, utt.voice, utt.speed, utt.pitch, utt.text)
    speech = soxr.resample(speech, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    before, after = (np.zeros(int(s * SAMPLE_RATE), np.float32) for s in (utt.pad_before, utt.pad_after))
    audio = np.concatenate([before, speech, after])
    rng = np.random.default_rng(utt.seed)
    speech_power = float(np.mean(speech**2)) if speech.size else 0.0
    noise = rng.standard_normal(audio.size).astype(np.float32)
    audio += noise * np.float32(np.sqrt(speech_power / 10 ** (utt.snr_db / 10)))
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * np.float32(0.95 / peak) if peak > 0.95 else audio


def synthesize_to(utt: Utterance, root: Path) -> float:
    """Write the utterance's FLAC atomically (temp file + rename); returns its duration in seconds."""
    audio = render(utt)
    dest = root / utt.audio_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=".flac")
    os.close(fd)
    try:
        sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(audio) / SAMPLE_RATE
