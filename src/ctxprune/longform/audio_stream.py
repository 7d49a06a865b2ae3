"""Read audio files of many hours block by block, so a long recording never sits whole in memory; the
samples match `load_audio` (same mixdown, same soxr HQ resampler, run as a stream)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.errors import CtxpruneError

_READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError)


class AudioStream:
    """Mono float32 audio at 16 kHz of one file, read block by block."""

    def __init__(self, path: str | Path, block_seconds: float = 60.0) -> None:
        path = Path(path)
        if not path.exists():
            raise CtxpruneError(f"{path}: no such file")
        if path.is_dir():
            raise CtxpruneError(f"{path}: is a directory, expected an audio file")
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        try:
            info = sf.info(str(path))
        except _READ_ERRORS as e:
            raise CtxpruneError(f"{path}: not a readable audio file (wav, flac, ogg, mp3): {e}") from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise CtxpruneError(f"{path}: audio is empty")
        self.path = path
        self.block_seconds = block_seconds
        self._rate = int(info.samplerate)
        self._frames = int(info.frames)
        self.duration: float = self._frames / self._rate
        # soxr's output length for n input samples is round(n * out / in); streaming gives the same.
        self.samples: int = self._frames if self._rate == SAMPLE_RATE else round(self.duration * SAMPLE_RATE)

    def blocks(self) -> Iterator[np.ndarray]:
        """Consecutive blocks of `block_seconds` (the last shorter). The resampler runs as one stream over
        the whole file, so joins are seamless and the result equals resampling the file in one go."""
        size = max(1, round(self.block_seconds * SAMPLE_RATE))
        pending: list[np.ndarray] = []
        held = 0
        for piece in self._resampled():
            pending.append(piece)
            held += len(piece)
            while held >= size:
                joined = np.concatenate(pending)
                yield joined[:size]
                rest = joined[size:]
                pending, held = [rest], len(rest)
        if held:
            yield np.concatenate(pending)

    def _resampled(self) -> Iterator[np.ndarray]:
        """16 kHz mono pieces of arbitrary length, in order."""
        resampler = None
        if self._rate != SAMPLE_RATE:
            resampler = soxr.ResampleStream(self._rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        for mono in self._source_blocks():
            yield mono if resampler is None else resampler.resample_chunk(mono)
        if resampler is not None:
            yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def _source_blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks at the file's own rate; any failure becomes a one-line error with the time."""
        read_frames = max(1, int(np.ceil(self.block_seconds * self._rate)))
        done = 0
        try:
            with sf.SoundFile(str(self.path)) as f:
                while done < self._frames:
                    try:
                        data = f.read(read_frames, dtype="float32", always_2d=True)
                    except _READ_ERRORS as e:
                        raise self._failed(done, f"corrupt audio data ({e})") from None
                    if len(data) == 0:
                        raise self._failed(done, f"file ends early (header says {self.duration:.1f} s)")
                    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
                    bad = np.flatnonzero(~np.isfinite(mono))
                    if bad.size:
                        raise self._failed(done + int(bad[0]), "audio contains NaN or infinite samples")
                    done += len(mono)
                    yield mono
        except _READ_ERRORS as e:  # opening failed (the file changed since __init__)
            raise self._failed(done, f"not a readable audio file: {e}") from None

    def _failed(self, frame: int, why: str) -> CtxpruneError:
        return CtxpruneError(f"{self.path}: reading failed at {frame / self._rate:.1f} s: {why}")


class SampleWindow:
    """Forward-only random access over a stream, for Whisper's sequential 30 s windows: it keeps only the
    samples from the latest `start` on, so memory stays about one window plus one block."""

    def __init__(self, stream: AudioStream) -> None:
        self.stream = stream
        self._blocks = stream.blocks()
        self._buf = np.zeros(0, dtype=np.float32)
        self._offset = 0  # file offset (16 kHz samples) of self._buf[0]
        self._start = 0
        self._exhausted = False
        self.max_buffered = 0

    def get(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop); shorter (possibly empty) past the end of the file."""
        if start < self._start:
            raise ValueError(f"SampleWindow only moves forward: start {start} < previous start {self._start}")
        self._start = start
        drop = min(max(0, start - self._offset), len(self._buf))
        self._buf, self._offset = self._buf[drop:], self._offset + drop
        while self._offset + len(self._buf) < stop and not self._exhausted:
            block = next(self._blocks, None)
            if block is None:
                self._exhausted = True
                break
            block_start = self._offset + len(self._buf)
            skip = min(max(0, start - block_start), len(block))  # a forward seek past buffered samples
            if skip and not len(self._buf):
                self._offset = block_start + skip
            self._buf = np.concatenate([self._buf, block[skip:]])
            self.max_buffered = max(self.max_buffered, len(self._buf))
        lo = max(0, start - self._offset)
        return self._buf[lo : max(lo, stop - self._offset)].copy()
