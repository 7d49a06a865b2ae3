"""Silero VAD over a block-streamed file finds the speech and skips silence; windows never exceed 30 s and
cover every region; the merging rules hold on hand-made regions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.longform.audio_stream import AudioStream
from ctxprune.longform.vad import SpeechWindow, VadOptions, _model, speech_regions, speech_windows

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIPS = [LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{n}.wav" for n in ("0870", "0920")]
S = SAMPLE_RATE


def _s(seconds: float) -> int:
    return int(seconds * S)


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """2 s silence, clip, 5 s silence, clip, 1 s silence; returns the path and each clip's true span."""
    if not all(c.exists() for c in CLIPS):
        pytest.skip("pocketsphinx test data not installed")
    a, b = (sf.read(str(c), dtype="float32")[0] for c in CLIPS)
    spans = [(_s(2), _s(2) + len(a)), (_s(7) + len(a), _s(7) + len(a) + len(b))]
    audio = np.concatenate([np.zeros(_s(2)), a, np.zeros(_s(5)), b, np.zeros(_s(1))]).astype(np.float32)
    path = tmp_path_factory.mktemp("vad") / "two_clips.wav"
    sf.write(str(path), audio, S)
    return path, spans


def test_regions_follow_the_speech(speech_file):
    path, spans = speech_file
    seen: list[float] = []
    regions = speech_regions(AudioStream(path, block_seconds=0.7), on_progress=seen.append)
    assert regions and all(0 <= lo < hi for lo, hi in regions)
    for lo, hi in spans:
        inside = [(r0, r1) for r0, r1 in regions if r1 > lo - _s(0.5) and r0 < hi + _s(0.5)]
        assert inside, "each clip has speech"
        assert abs(inside[0][0] - lo) < _s(0.5) and abs(inside[-1][1] - hi) < _s(0.5)
        covered = sum(min(r1, hi) - max(r0, lo) for r0, r1 in inside)
        assert covered > 0.8 * (hi - lo)
    gap = (spans[0][1] + _s(0.5), spans[1][0] - _s(0.5))
    assert not [r for r in regions if r[1] > gap[0] and r[0] < gap[1]], "the 5 s pause is not speech"
    assert regions[0][0] > spans[0][0] - _s(0.5) and regions[-1][1] < spans[1][1] + _s(0.5)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(sf.info(str(path)).duration)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero's own model lookup
def test_blocks_do_not_change_the_result(speech_file):
    """Same regions as silero's stock path (its frame-by-frame ONNX model and get_speech_timestamps on
    the whole file), whatever the block size."""
    path, _ = speech_file
    _model()  # imports silero_vad without changing torch's threads
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=True)

    o = VadOptions()
    whole = torch.from_numpy(sf.read(str(path), dtype="float32")[0])
    expected = get_speech_timestamps(
        whole,
        model,
        threshold=o.threshold,
        min_speech_duration_ms=o.min_speech_duration_ms,
        min_silence_duration_ms=o.min_silence_duration_ms,
        speech_pad_ms=o.speech_pad_ms,
        max_speech_duration_s=o.max_window_s,
    )
    expected = [(d["start"], d["end"]) for d in expected]
    for block_seconds in (0.7, 3.3, 60.0):
        assert speech_regions(AudioStream(path, block_seconds=block_seconds)) == expected


def test_short_window_limit_splits_regions(speech_file):
    path, _ = speech_file
    regions = speech_regions(AudioStream(path, block_seconds=2.0), VadOptions(max_window_s=2.0))
    assert len(regions) >= 6 and all(hi - lo <= _s(2.0) for lo, hi in regions)
    windows = speech_windows(regions, max_window_s=2.0)
    assert all(w.seconds <= 2.0 for w in windows)


def test_low_noise_has_no_speech(tmp_path: Path):
    path = tmp_path / "noise.flac"
    sf.write(str(path), (np.random.default_rng(0).standard_normal(_s(12)) * 1e-3).astype(np.float32), S)
    assert speech_regions(AudioStream(path, block_seconds=5.0)) == []
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(_s(3), dtype=np.float32), S)
    assert speech_regions(AudioStream(silent)) == []


def test_loading_keeps_torch_threads(monkeypatch):
    """silero_vad sets torch to one thread on import; a fresh import must leave ours as it was."""
    for name in [m for m in sys.modules if m == "silero_vad" or m.startswith("silero_vad.")]:
        monkeypatch.delitem(sys.modules, name)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _model.cache_clear()
        _model()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        _model.cache_clear()


def W(*pieces):
    return SpeechWindow(tuple((_s(lo), _s(hi)) for lo, hi in pieces))


def test_merging_rules():
    assert speech_windows([]) == []
    assert speech_windows([(_s(1), _s(5)), (_s(10), _s(20))]) == [W((1, 5), (10, 20))]  # 14 s of speech
    assert speech_windows([(0, _s(10)), (_s(15), _s(35))]) == [W((0, 10), (15, 35))]  # exactly 30 s
    got = speech_windows([(0, _s(10)), (_s(15), _s(25)), (_s(28), _s(40)), (_s(45), _s(46))])
    assert got == [W((0, 10), (15, 25)), W((28, 40), (45, 46))]
    assert speech_windows([(_s(5), _s(8)), (0, _s(2))]) == [W((0, 2), (5, 8))]  # sorted first
    assert speech_windows([(0, _s(4)), (_s(3), _s(9))]) == [W((0, 4), (4, 9))]  # overlaps clipped
    assert speech_windows([(0, _s(4)), (_s(5), _s(9))], max_window_s=5.0) == [W((0, 4)), W((5, 9))]
    window = W((2, 4.5), (6, 7))
    assert window.seconds == pytest.approx(3.5) and (window.start, window.stop) == (_s(2), _s(7))


def test_region_longer_than_the_limit_is_split():
    windows = speech_windows([(_s(10), _s(85))])
    assert windows == [W((10, 35)), W((35, 60)), W((60, 85))]


def test_windows_cover_regions_once_and_hold_at_most_30_s_of_speech():
    rng = np.random.default_rng(3)
    regions, t = [], 0
    for _ in range(200):
        t += int(rng.integers(0, _s(8)))
        length = int(rng.integers(_s(0.2), _s(70)))
        regions.append((t, t + length))
        t += length
    windows = speech_windows(regions)
    assert all(0 < w.seconds <= 30 for w in windows)
    pieces = [p for w in windows for p in w.pieces]
    assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:], strict=False))
    assert sum(hi - lo for lo, hi in pieces) == sum(hi - lo for lo, hi in regions)
