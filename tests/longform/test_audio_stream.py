"""AudioStream reads long files in blocks with the same samples as load_audio; SampleWindow keeps memory to
about one window plus one block; broken files give one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ctxprune.data.audio import SAMPLE_RATE, load_audio
from ctxprune.errors import CtxpruneError
from ctxprune.longform.audio_stream import AudioStream, SampleWindow

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"
needs_clip = pytest.mark.skipif(not CLIP.exists(), reason="pocketsphinx test data not installed")


def _whole(stream: AudioStream) -> np.ndarray:
    return np.concatenate(list(stream.blocks()))


def _write_noise_flac(path: Path, seconds: int, rate: int = SAMPLE_RATE) -> None:
    """Low noise written one second at a time, so the test never builds the whole file in memory."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="FLAC") as f:
        for _ in range(seconds):
            f.write((rng.standard_normal(rate) * 0.01).astype(np.float32))


@needs_clip
def test_real_16k_clip_equals_load_audio():
    stream = AudioStream(CLIP, block_seconds=2.0)
    blocks = list(stream.blocks())
    assert all(len(b) == 2 * SAMPLE_RATE for b in blocks[:-1]) and len(blocks[-1]) <= 2 * SAMPLE_RATE
    assert all(b.dtype == np.float32 for b in blocks)
    whole, ref = np.concatenate(blocks), load_audio(CLIP)
    assert len(whole) == len(ref) == stream.samples
    np.testing.assert_array_equal(whole, ref)
    assert stream.duration == pytest.approx(len(ref) / SAMPLE_RATE)


def test_stereo_44k_resampled_like_load_audio(tmp_path: Path):
    rng = np.random.default_rng(1)
    t = np.arange(44_100 * 7) / 44_100
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1).astype(np.float32), 44_100)
    stream = AudioStream(path, block_seconds=1.5)
    whole, ref = _whole(stream), load_audio(path)
    assert abs(len(whole) - len(ref)) <= 2 and abs(stream.samples - len(ref)) <= 2
    n = min(len(whole), len(ref))
    np.testing.assert_allclose(whole[:n], ref[:n], atol=1e-3)


def test_long_file_blocks_and_forward_window(tmp_path: Path):
    path = tmp_path / "long.flac"
    _write_noise_flac(path, 300)
    stream = AudioStream(path, block_seconds=10.0)
    assert stream.duration == pytest.approx(300.0) and stream.samples == 300 * SAMPLE_RATE
    whole = _whole(stream)
    assert len(whole) == stream.samples

    window, n = SampleWindow(stream), 30 * SAMPLE_RATE
    starts = list(range(0, 120 * SAMPLE_RATE, n)) + [200 * SAMPLE_RATE + 123, 290 * SAMPLE_RATE]
    for start in starts:  # sequential windows, then a forward seek, then the ragged end
        got = window.get(start, start + n)
        np.testing.assert_array_equal(got, whole[start : start + n])
    assert len(got) == 10 * SAMPLE_RATE  # shorter at the end of the file
    assert len(window.get(300 * SAMPLE_RATE, 301 * SAMPLE_RATE)) == 0
    assert window.max_buffered < n + 2 * 10 * SAMPLE_RATE
    with pytest.raises(ValueError):
        window.get(0, n)


def test_overlapping_windows_in_one_block(tmp_path: Path):
    path = tmp_path / "short.flac"
    _write_noise_flac(path, 5)
    stream = AudioStream(path, block_seconds=2.0)
    whole, window = _whole(stream), SampleWindow(stream)
    for start, stop in [(0, 100), (50, 40_000), (50, 60), (39_000, 79_000)]:
        np.testing.assert_array_equal(window.get(start, stop), whole[start:stop])


def test_silence_is_not_an_error(tmp_path: Path):
    path = tmp_path / "silent.wav"
    sf.write(str(path), np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    assert np.all(_whole(AudioStream(path)) == 0)


def test_corrupt_flac_mid_file_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "corrupt.flac"
    _write_noise_flac(path, 20)
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    data[half:] = np.random.default_rng(2).integers(0, 256, len(data) - half, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    stream = AudioStream(path, block_seconds=1.0)  # the header is intact
    with pytest.raises(CtxpruneError, match=r"corrupt\.flac: reading failed at \d+\.\d s") as err:
        _whole(stream)
    assert "\n" not in str(err.value)
    assert 5.0 <= float(str(err.value).split("at ")[1].split(" s")[0]) <= 15.0


def test_nan_samples_name_the_time(tmp_path: Path):
    audio = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
    audio[int(2.5 * SAMPLE_RATE)] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), audio, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(CtxpruneError, match=r"nan\.wav: reading failed at 2\.5 s: .*NaN"):
        _whole(AudioStream(path, block_seconds=1.0))


def test_open_errors(tmp_path: Path):
    with pytest.raises(CtxpruneError, match="missing.wav: no such file"):
        AudioStream(tmp_path / "missing.wav")
    with pytest.raises(CtxpruneError, match="is a directory"):
        AudioStream(tmp_path)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(CtxpruneError, match="notes.wav: not a readable audio file"):
        AudioStream(text)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(CtxpruneError, match="empty.wav: audio is empty"):
        AudioStream(empty)
