"""The Python API behind `ctxprune transcribe`: files in, timed segments out, pruned window by window.

Two ways through a file, as in openai-whisper / HF `generate` and in faster-whisper's batched pipeline:
- sequential (default): Whisper's long-form algorithm over the whole file, streamed from disk
  (`longform.sources.StreamedMel`); files decode side by side in one batch;
- `vad=True`: Silero VAD finds speech (`longform.vad`), merged into windows of at most 30 s that decode
  as one batch; silence is never decoded.
Either way every 30 s window gets its own mask from its own context. A file that cannot be read, or
fails mid-way, is reported in its result and does not stop the others.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from ctxprune.data.speaker import context_vectors
from ctxprune.errors import CtxpruneError
from ctxprune.longform.audio_stream import AudioStream, SampleWindow
from ctxprune.longform.decoder import Job, LongFormDecoder, LongFormOptions
from ctxprune.longform.segments import Segment, Transcript
from ctxprune.longform.sources import FRAME_SECONDS, SpeechMel, StreamedMel
from ctxprune.longform.timing import snap_to_speech
from ctxprune.longform.vad import TIMING, VadOptions, speech_probabilities, speech_windows
from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.decoding import GUARDED, DecodeOptions
from ctxprune.stack import StackSpec, load_stack

NO_SPEECH = "no speech found"
DEFAULT_LONG_FORM, DEFAULT_VAD = LongFormOptions(), VadOptions()


class Transcriber:
    """Files in, transcripts out, with the model that `spec` describes; `options` are the decoding
    choices of each window (greedy with the loop guard by default), `long_form` the fallback and
    conditioning choices; `teacher` a dense model to share (see `load_stack`)."""

    def __init__(
        self,
        spec: StackSpec | None = None,
        options: DecodeOptions = GUARDED,
        long_form: LongFormOptions = DEFAULT_LONG_FORM,
        teacher: GatedWhisper | None = None,
    ):
        self.spec, self.options, self.long_form = spec or StackSpec(), options, long_form
        self.stack = load_stack(self.spec, teacher)
        self.report_gates = self.spec.gates is not None  # segments say which modules ran

    @property
    def special(self):
        return self.stack.loaded.tokens

    def check_request(self, task: str, language: str) -> None:
        """Refuse an unknown task or language (`auto`: detect it) with a one-line error."""
        self.special.check_task(task)
        if language != "auto":
            self.special.check_language(language)

    def transcribe(
        self,
        paths: Sequence[str | Path],
        task: str = "transcribe",
        language: str = "auto",
        batch_size: int = 8,
        vad: bool = False,
        vad_options: VadOptions = DEFAULT_VAD,
        snap: bool = True,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[Transcript]:
        """Transcribe (or translate to English) each file. With `snap`, segment edges move onto the speech
        VAD hears (`longform.timing`). `on_progress(seconds)` reports audio done."""
        self.check_request(task, language)
        results = [Transcript(path=str(p), task=task) for p in paths]
        lang = None if language == "auto" else language
        decoder = LongFormDecoder(self.stack.pipeline, task, self.long_form, self.options, batch_size)
        started, self._timing = {}, {}
        jobs = self._vad_jobs(results, lang, vad_options) if vad else self._file_jobs(results, task, language)

        def timed(jobs: Iterator[Job]) -> Iterator[Job]:
            for job in jobs:
                started.setdefault(self._file(job), time.perf_counter())
                yield job

        def progress(job: Job, frames: int) -> None:
            if on_progress:
                on_progress(frames * FRAME_SECONDS)

        for job in decoder.run(timed(jobs), progress):
            r = results[self._file(job)]
            self.collect(r, job)
            r.seconds = round(time.perf_counter() - started[self._file(job)], 3)
        for i, r in enumerate(results):
            t0 = time.perf_counter()
            self.finish(r, snap, self._timing.get(i))
            r.seconds = round(r.seconds + time.perf_counter() - t0, 3)
        return results

    def file_job(
        self,
        key: object,
        path: str | Path,
        task: str = "transcribe",
        language: str = "auto",
        prompt: str = "",
    ) -> tuple[Transcript, Job]:
        """One file as one job of the sequential path, for a caller that schedules jobs itself (the
        server); its result once the job is done: `collect`, then `finish`. Unreadable audio raises."""
        self.check_request(task, language)
        result = Transcript(path=str(path), task=task)
        source = StreamedMel(self._stream(result), self.stack.gated.config.num_mel_bins, self.spec.device)
        text = prompt.strip()  # as openai-whisper: the prompt's tokens with a leading space
        tokens = self.stack.loaded.tokenizer.encode(" " + text, add_special_tokens=False) if text else []
        job = Job(key, source, None if language == "auto" else language, task, tokens)
        return result, job

    def collect(self, result: Transcript, job: Job) -> None:
        """Add a finished job's segments (and error, language) to its file's result."""
        result.error = result.error or job.error
        result.segments += self._segments(job)
        spans = job.spans
        result.language = result.language or job.language or (spans[0].window.language if spans else None)

    def finish(self, result: Transcript, snap: bool, regions: list[tuple[int, int]] | None = None) -> None:
        """Once every job of a file is collected: edges snapped onto speech (VAD `regions`, or one VAD
        pass now), segments in order and numbered, the text, a note when nothing was said."""
        if snap and result.segments and result.error is None:
            if regions is None:
                regions = speech_probabilities(AudioStream(result.path)).regions(TIMING)
            snap_to_speech(result.segments, regions)
        result.segments.sort(key=lambda s: s.start)
        for k, s in enumerate(result.segments):
            s.id = k
        result.text = "".join(s.text for s in result.segments).strip()
        if result.error is None and not result.segments:
            result.note = result.note or f"{NO_SPEECH} (every window's no-speech probability was high)"

    @staticmethod
    def _file(job: Job) -> int:
        return job.key[0] if isinstance(job.key, tuple) else job.key

    @staticmethod
    def _stream(result: Transcript) -> AudioStream:
        """The file's audio, streamed; its duration noted in the result. Unreadable audio raises."""
        stream = AudioStream(result.path)
        result.duration = round(stream.duration, 3)
        return stream

    def _open(self, result: Transcript) -> AudioStream | None:
        """`_stream`, with unreadable audio noted as the result's error instead."""
        try:
            return self._stream(result)
        except CtxpruneError as e:
            result.error = str(e)
            return None

    def _file_jobs(self, results: list[Transcript], task: str, language: str) -> Iterator[Job]:
        for i, r in enumerate(results):
            try:
                results[i], job = self.file_job(i, r.path, task, language)
            except CtxpruneError as e:
                r.error, job = str(e), Job(i, None)
            yield job

    def _vad_jobs(self, results: list[Transcript], language: str | None, vad: VadOptions) -> Iterator[Job]:
        """Per file: the speech windows, each a job; the file's language, unless given or detected per
        window, from its first window (as faster-whisper's batched pipeline)."""
        n_mels = self.stack.gated.config.num_mel_bins
        for i, r in enumerate(results):
            stream = self._open(r)
            if stream is None:
                yield Job(i, None)
                continue
            try:
                probs = speech_probabilities(stream)
                self._timing[i] = probs.regions(TIMING)
                windows = speech_windows(probs.regions(vad), vad.max_window_s)
            except CtxpruneError as e:
                yield Job(i, None, error=str(e))
                continue
            if not windows:
                r.note = f"{NO_SPEECH} (voice activity detection found none)"
            audio = SampleWindow(AudioStream(r.path))
            file_language = language
            for k, w in enumerate(windows):
                try:
                    pieces = [(lo, audio.get(lo, hi)) for lo, hi in w.pieces]
                    source = SpeechMel(pieces, n_mels, self.spec.device)
                except CtxpruneError as e:
                    yield Job((i, k), None, error=str(e))
                    break
                if file_language is None and not self.long_form.language_per_window:
                    file_language = self._detect(source)
                yield Job((i, k), source, file_language)

    def _detect(self, source: SpeechMel) -> str:
        """The language of a window, as the decoder would detect it (one encoder pass and one step)."""
        features = source.window(0)[None].to(self.spec.device, self.spec.dtype)
        frames = torch.tensor([source.total_frames])
        first = replace(self.options, max_new_tokens=1)
        vectors = context_vectors(self.stack.pipeline.policy.reads, [source.speech(0)])
        return self.stack.pipeline.run(features, frames, ["transcribe"], [None], vectors, first).languages[0]

    def _segments(self, job: Job) -> list[Segment]:
        tokenizer, eot = self.stack.loaded.tokenizer, self.special.eot
        names = self.stack.space.names
        gated = self.report_gates
        out = []
        for span in job.spans:
            text = tokenizer.decode([t for t in span.tokens if t < eot])
            if not text.strip():
                continue  # as openai-whisper, a segment without text is dropped
            gates = None
            if gated:
                ran = [n for n, k in zip(names, span.window.keep, strict=True) if k]
                gates = {"ran": ran, "flops_executed_share": round(span.window.flops_share, 4)}
                if span.window.teacher:  # the loop guard: the dense model decoded this window again
                    gates["decoded_by"] = "dense teacher"
            out.append(
                Segment(
                    id=0,
                    seek=span.seek,
                    start=round(span.start, 3),
                    end=round(span.end, 3),
                    text=text,
                    tokens=span.tokens,
                    temperature=span.window.temperature,
                    avg_logprob=span.window.avg_logprob,
                    compression_ratio=span.window.compression_ratio,
                    no_speech_prob=span.window.no_speech_prob,
                    language=span.window.language if self.long_form.language_per_window else None,
                    gates=gates,
                )  # fmt: skip
            )
        return out


def audio_seconds(paths: Sequence[str | Path]) -> float:
    """The total duration of readable files, from their headers (for a progress bar)."""
    total = 0.0
    for p in paths:
        with contextlib.suppress(CtxpruneError):
            total += AudioStream(p).duration
    return total
