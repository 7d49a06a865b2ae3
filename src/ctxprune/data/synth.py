"""Speech from text with espeak-ng, then the acoustic variety a real corpus has: speed and pitch
(espeak's own controls), additive noise at a chosen SNR, and silence padding; 16 kHz FLAC out.

Everything random is decided in the plan (see `corpus.py`), so synthesis is a pure function of an
`Utterance`: the same plan gives byte-identical files for the same espeak-ng and libsndfile.

espeak-ng runs as one program call per sentence. Its C library (ctypes) was 3x faster, but its output
for a sentence depended on the sentences synthesized before it in the same process, which would make
the corpus depend on how work was spread over workers; reproducibility wins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.errors import CtxpruneError

ESPEAK_VOICES = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it"}
LANGUAGES = tuple(ESPEAK_VOICES)  # the corpus languages: each has an espeak-ng voice and templates


@dataclass(frozen=True)
class Utterance:
    id: str
    language: str
    text: str
    english: str
    split: str
    voice: str  # espeak-ng variant, e.g. "f3"
    speed: int  # words per minute
    pitch: int  # 0-99
    snr_db: float
    pad_before: float  # seconds of silence (with noise) before and after the speech
    pad_after: float
    seed: int
    source: str  # "gettext:<catalog>" or "template:<id>"

    @property
    def audio_path(self) -> str:
        return f"audio/{self.language}/{self.id}.flac"


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise CtxpruneError("espeak-ng is not installed; run `apt-get install espeak-ng`")
    return path


def espeak_version() -> str:
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True).stdout
    return out.split("Data at")[0].strip()


def speak(utt: Utterance, espeak: str) -> tuple[np.ndarray, int]:
    """Raw espeak-ng speech (float32, its native rate)."""
    voice = f"{ESPEAK_VOICES[utt.language]}+{utt.voice}"
    fd, wav = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        cmd = [
            espeak,
            "-v",
            voice,
            "-s",
            str(utt.speed),
            "-p",
            str(utt.pitch),
            "-b",
            "1",
            "-w",
            wav,
            utt.text,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CtxpruneError(f"espeak-ng failed on {utt.id}: {proc.stderr.strip()}")
        audio, rate = sf.read(wav, dtype="float32")
    finally:
        os.unlink(wav)
    return audio, rate


def render(utt: Utterance, espeak: str) -> np.ndarray:
    """The final 16 kHz waveform: padded, noised at `snr_db`, resampled, peak-limited."""
    speech, rate = speak(utt, espeak)
    speech = soxr.resample(speech, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    before, after = (np.zeros(int(s * SAMPLE_RATE), np.float32) for s in (utt.pad_before, utt.pad_after))
    audio = np.concatenate([before, speech, after])
    rng = np.random.default_rng(utt.seed)
    speech_power = float(np.mean(speech**2)) if speech.size else 0.0
    noise = rng.standard_normal(audio.size).astype(np.float32)
    audio += noise * np.float32(np.sqrt(speech_power / 10 ** (utt.snr_db / 10)))
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * np.float32(0.95 / peak) if peak > 0.95 else audio


def synthesize_to(utt: Utterance, root: Path, espeak: str) -> float:
    """Write the utterance's FLAC atomically (temp file + rename); returns its duration in seconds."""
    audio = render(utt, espeak)
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
