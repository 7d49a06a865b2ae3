"""Windows of log-mel frames: a streamed file sliced as HF's long-form `generate` slices its features, and a
VAD window's joined speech pieces with their times mapped back into the file."""

import numpy as np
import pytest
import soundfile as sf
import torch

from ctxprune.data.features import log_mel
from ctxprune.longform.audio_stream import AudioStream
from ctxprune.longform.sources import SpeechMel, StreamedMel


def test_streamed_windows_are_slices_of_the_whole_log_mel(tmp_path):
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 47).astype(np.float32)
    sf.write(tmp_path / "a.wav", audio, 16000, subtype="FLOAT")
    source = StreamedMel(AudioStream(tmp_path / "a.wav", block_seconds=7.0))
    whole = log_mel(torch.from_numpy(audio)[None])[0]
    assert source.total_frames == whole.shape[1] == 4700
    torch.testing.assert_close(source.window(0), whole[:, :3000])
    last = source.window(2800)  # 1900 real frames, then zeros as HF pads
    torch.testing.assert_close(last[:, :1900], whole[:, 2800:])
    assert torch.equal(last[:, 1900:], torch.zeros(80, 1100))
    assert source.time(12.5) == 12.5


def test_speech_pieces_map_back_to_the_file():
    pieces = [(16000 * 10, np.zeros(16000 * 2, np.float32)), (16000 * 20, np.zeros(16000 * 3, np.float32))]
    source = SpeechMel(pieces)
    assert source.total_frames == 500
    assert source.time(1.0) == pytest.approx(11.0)
    assert source.time(2.0) == pytest.approx(20.0)  # a start at the joint opens the second piece
    assert source.time(2.0, end=True) == pytest.approx(12.0)  # an end at the joint closes the first
    assert source.time(4.5, end=True) == pytest.approx(22.5)


def test_a_speech_window_hands_out_its_joined_samples_from_a_seek():
    pieces = [(0, np.arange(16000, dtype=np.float32)), (48000, np.ones(8000, dtype=np.float32))]
    source = SpeechMel(pieces)
    joined = np.concatenate([a for _, a in pieces])
    np.testing.assert_array_equal(source.speech(0), joined)
    np.testing.assert_array_equal(source.speech(100), joined[16000:])
