import numpy as np
import pytest
import soundfile as sf

from ctxprune.data.audio import SAMPLE_RATE, load_audio
from ctxprune.errors import CtxpruneError


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize(("ext", "fmt"), [("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")])
def test_reads_formats_and_resamples_to_16k(tmp_path, ext, fmt):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(1.0, 44100), 44100, format=fmt)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # mp3 encoders pad a few ms; the others are exact up to the resampler's rounding.
    assert abs(len(audio) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert 0.2 < np.abs(audio).max() < 0.4


def test_mixes_stereo_down_to_mono(tmp_path):
    left_right = np.stack([_tone(0.5, 16000), -_tone(0.5, 16000) * 0.5], axis=1)
    sf.write(tmp_path / "s.wav", left_right, 16000)
    audio = load_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(audio, left_right.mean(axis=1), atol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not audio at all"), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000, format="WAV"), "empty"),
        (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000, format="WAV"), "silent"),
    ],
    ids=["missing", "not-audio", "empty", "silent"],
)
def test_bad_input_is_one_clear_error(tmp_path, make, message):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(CtxpruneError, match=message):
        load_audio(path)
