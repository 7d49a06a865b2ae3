"""Speech regions with Silero VAD, merged into windows of at most 30 s, as faster-whisper's batched pipeline
and WhisperX do: long files are decoded window by window and silence is skipped."""

from __future__ import annotations

import functools
import math
import warnings
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.longform.audio_stream import AudioStream

FRAME, CONTEXT = 512, 64  # Silero's frame at 16 kHz (32 ms), read with the 64 samples before it
MAX_FRAMES = 512  # frames per call of the sequence model (16 s)


@dataclass(frozen=True)
class VadOptions:
    """Silero's thresholds with faster-whisper's batched-pipeline defaults (160 ms silence ends a region,
    400 ms padding), and silero's 250 ms minimum speech; regions never exceed `max_window_s`."""

    threshold: float = 0.5
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 160
    speech_pad_ms: int = 400
    max_window_s: float = 30.0


TIMING = VadOptions(min_silence_duration_ms=100, speech_pad_ms=30)  # silero's own: tight, for timings


@dataclass(frozen=True)
class SpeechWindow:
    """Speech pieces of the file (16 kHz sample offsets) that Whisper decodes as one window: their audio is
    joined without the silence between them, at most 30 s of it."""

    pieces: tuple[tuple[int, int], ...]

    @property
    def start(self) -> int:
        return self.pieces[0][0]

    @property
    def stop(self) -> int:
        return self.pieces[-1][1]

    @property
    def seconds(self) -> float:
        """Speech in the window (what Whisper hears)."""
        return sum(hi - lo for lo, hi in self.pieces) / SAMPLE_RATE


@functools.cache
def _model():
    """Silero's sequence ONNX model (one call per up to 512 frames, the same probabilities as its
    frame-by-frame model), loaded once. Importing silero_vad sets torch to one thread; undo that."""
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # its resource lookup uses a deprecated importlib API
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero_vad.load_silero_vad(sequence=True)


@dataclass(frozen=True)
class SpeechProbabilities:
    """Silero's speech probability of every 32 ms frame of a file, and the file's length in samples."""

    probs: array
    samples: int

    def regions(self, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
        """Speech as [start, stop) sample offsets under `options`, by silero's own timestamp rules, run once
        over the whole file's probabilities; none exceeds `options.max_window_s`."""
        from silero_vad import get_speech_timestamps_from_probs

        if not self.samples:
            return []
        speeches = get_speech_timestamps_from_probs(
            self.probs,
            sampling_rate=SAMPLE_RATE,
            threshold=options.threshold,
            min_speech_duration_ms=options.min_speech_duration_ms,
            max_speech_duration_s=options.max_window_s,
            min_silence_duration_ms=options.min_silence_duration_ms,
            speech_pad_ms=options.speech_pad_ms,
            audio_length_samples=self.samples,
        )
        regions = [(int(s["start"]), int(s["end"])) for s in speeches]
        return [piece for region in regions for piece in _split(region, options.max_window_s)]


def speech_probabilities(
    stream: AudioStream, on_progress: Callable[[float], None] | None = None
) -> SpeechProbabilities:
    """Run the VAD over a stream, each block's whole frames in one call of the package's sequence model.
    Each frame is read with the 64 samples before it, and the LSTM state runs on across calls, so the
    result is what silero gives on the whole file: a region crossing a block boundary is neither cut nor
    shifted. Memory: one block plus 4 bytes per 32 ms frame."""
    session = _model().session
    state = {"h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    context = np.zeros(CONTEXT, np.float32)
    probs = array("f")
    tail = np.zeros(0, dtype=np.float32)
    done = 0

    def run(audio: np.ndarray) -> None:
        nonlocal context
        frames = audio.reshape(-1, FRAME)
        before = np.concatenate([context[None], frames[:-1, -CONTEXT:]])
        out, state["h"], state["c"] = session.run(
            ["speech_probs", "hn", "cn"], {"input": np.concatenate([before, frames], 1), **state}
        )
        probs.extend(np.asarray(out, np.float32).reshape(-1).tolist())
        context = frames[-1, -CONTEXT:].copy()

    for block in stream.blocks():
        audio = np.concatenate([tail, block])
        whole = len(audio) - len(audio) % FRAME
        for start in range(0, whole, FRAME * MAX_FRAMES):
            run(audio[start : min(whole, start + FRAME * MAX_FRAMES)])
        tail = audio[whole:]
        done += len(block)
        if on_progress is not None:
            on_progress(done / SAMPLE_RATE)
    if len(tail):  # silero pads the last frame with zeros
        run(np.pad(tail, (0, FRAME - len(tail))))
    return SpeechProbabilities(probs, done)


def speech_regions(
    stream: AudioStream,
    options: VadOptions = VadOptions(),
    on_progress: Callable[[float], None] | None = None,
) -> list[tuple[int, int]]:
    """Speech as [start, stop) sample offsets: what `silero_vad.get_speech_timestamps` gives on the whole
    file, computed block by block."""
    return speech_probabilities(stream, on_progress).regions(options)


def _split(region: tuple[int, int], max_window_s: float) -> list[tuple[int, int]]:
    """Equal pieces of at most `max_window_s`. Silero already cuts at `max_speech_duration_s` (at the longest
    pause, before padding), so this is a guarantee rather than the usual path."""
    start, stop = region
    limit = int(max_window_s * SAMPLE_RATE)
    pieces = max(1, math.ceil((stop - start) / limit))
    edges = [start + (stop - start) * k // pieces for k in range(pieces + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def speech_windows(regions: list[tuple[int, int]], max_window_s: float = 30.0) -> list[SpeechWindow]:
    """Consecutive regions grouped greedily into windows of at most `max_window_s` of speech, the silence
    between them cut out, as faster-whisper's batched pipeline (`collect_chunks`) does: fewer windows than
    spans with their pauses, so fewer encoder passes. A region longer than the limit is split into equal
    pieces first; overlapping regions are clipped so that no sample is decoded twice."""
    limit = int(max_window_s * SAMPLE_RATE)
    windows: list[SpeechWindow] = []
    current: list[tuple[int, int]] = []
    speech = last = 0
    for region in sorted(regions):
        for lo, hi in _split(region, max_window_s):
            lo = max(lo, last)
            if hi <= lo:
                continue
            if current and speech + hi - lo > limit:
                windows.append(SpeechWindow(tuple(current)))
                current, speech = [], 0
            current.append((lo, hi))
            speech += hi - lo
            last = hi
    if current:
        windows.append(SpeechWindow(tuple(current)))
    return windows
