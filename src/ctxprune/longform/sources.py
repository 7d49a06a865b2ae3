"""Where the long-form decoder's 30 s windows come from: a whole file streamed from disk (Whisper's
sequential algorithm moves through it), or one speech window that VAD found.

A source hands out log-mel windows of 3000 frames (30 s) at a `seek` in frames. `StreamedMel` follows
HF's long-form `generate`: the log-mel of the whole audio, sliced at `seek` and padded with zeros in
feature space, so that its windows equal HF's. The log-mel is computed per block of `block_seconds`
(its -8 dB floor below the block's peak, as Whisper takes it per input), so a file of hours never sits
whole in memory; a file shorter than a block gets exactly HF's features. `SpeechMel` joins a VAD
window's speech pieces and pads them to 30 s before the log-mel, as every short-form Whisper input is.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.data.features import HOP_LENGTH, N_FRAMES, log_mel, pad_or_trim
from ctxprune.longform.audio_stream import AudioStream, SampleWindow

FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 10 ms: a `seek` step


class FrameSource(Protocol):
    """Log-mel windows of one stretch of a file."""

    total_frames: int

    def window(self, seek: int) -> Tensor:
        """[n_mels, 3000] from frame `seek` (zero-padded past the end); `seek` never decreases."""
        ...

    def speech(self, seek: int) -> np.ndarray:
        """The window's 16 kHz samples (not padded), for context vectors such as the speaker's; called
        after `window(seek)` at the same `seek`."""
        ...

    def time(self, seconds: float, end: bool = False) -> float:
        """Where a time of this source's audio lies in the file (an `end` at a joint belongs before it)."""
        ...


def _slice(mel: Tensor, start: int) -> Tensor:
    piece = mel[:, start : start + N_FRAMES]
    return F.pad(piece, (0, N_FRAMES - piece.shape[1]))


class StreamedMel:
    """A whole file: log-mel blocks computed as the seek moves forward."""

    def __init__(
        self, stream: AudioStream, n_mels: int = 80, device: str | torch.device = "cpu", block_seconds=600.0
    ):
        self.samples = SampleWindow(stream)
        self.n_mels, self.device = n_mels, device
        self.total_frames = stream.samples // HOP_LENGTH
        self.block_frames = max(int(block_seconds / FRAME_SECONDS), 2 * N_FRAMES)
        self._start, self._mel = 0, None

    def window(self, seek: int) -> Tensor:
        end = min(seek + N_FRAMES, self.total_frames)
        if self._mel is None or seek < self._start or end > self._start + self._mel.shape[1]:
            stop = min(seek + self.block_frames, self.total_frames)
            audio = self.samples.get(seek * HOP_LENGTH, stop * HOP_LENGTH)
            self._start = seek
            self._mel = log_mel(torch.from_numpy(audio)[None].to(self.device), self.n_mels)[0]
        return _slice(self._mel, seek - self._start)

    def speech(self, seek: int) -> np.ndarray:
        end = min(seek + N_FRAMES, self.total_frames)
        return self.samples.get(seek * HOP_LENGTH, end * HOP_LENGTH)

    def time(self, seconds: float, end: bool = False) -> float:
        return seconds


class SpeechMel:
    """One VAD window: its speech pieces joined (at most 30 s), padded to 30 s before the log-mel; times
    map back through the pieces, as faster-whisper's `SpeechTimestampsMap` does."""

    def __init__(
        self, pieces: list[tuple[int, np.ndarray]], n_mels: int = 80, device: str | torch.device = "cpu"
    ):
        self.starts = [start / SAMPLE_RATE for start, _ in pieces]  # each piece's place in the file
        lengths = [len(audio) / SAMPLE_RATE for _, audio in pieces]
        self.joints = list(itertools.accumulate(lengths, initial=0.0))  # each piece's place in the window
        audio = np.concatenate([a for _, a in pieces])
        self.total_frames = min(N_FRAMES, -(-len(audio) // HOP_LENGTH))
        self._audio = audio[: N_FRAMES * HOP_LENGTH]
        self._mel = log_mel(torch.from_numpy(pad_or_trim(audio))[None].to(device), n_mels)[0]

    def window(self, seek: int) -> Tensor:
        return _slice(self._mel, seek)

    def speech(self, seek: int) -> np.ndarray:
        return self._audio[seek * HOP_LENGTH :]

    def time(self, seconds: float, end: bool = False) -> float:
        k = (bisect.bisect_left if end else bisect.bisect_right)(self.joints, seconds) - 1
        k = min(max(k, 0), len(self.starts) - 1)
        return self.starts[k] + seconds - self.joints[k]
