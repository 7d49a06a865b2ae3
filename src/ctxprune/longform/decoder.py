"""Whisper's sequential long-form algorithm over many sources at once, pruned window by window.

Each source (a whole file, or a speech window VAD found) is decoded 30 s at a time with timestamp tokens;
its seek then moves to the end of the last complete segment (`segments.split_window`). Sources decode
together in one batch of up to `batch_size` rows, and a finished source's row goes to the next source,
so a batch stays full until the work runs out. Every window gets its own mask from its own context:
the batch runs through the stack's pipeline like any other batch.

A gate set that reads the speaker's vector gets it from each window's own audio (`data/speaker.py`), as
evaluation computes it per utterance: a file whose speaker changes gets each window's speaker.

Where the compression ratio or the average log-probability says the output is bad, a window is decoded
again at the next temperature (sampling); where the no-speech probability is high and the log-probability
low, it is skipped as silence. The rules and thresholds are HF's long-form `generate`
(`generate_with_fallback`, `_need_fallback`), which follows openai-whisper's `transcribe`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import torch

from ctxprune.data.features import N_FRAMES
from ctxprune.data.speaker import SPEAKER, context_vectors
from ctxprune.errors import CtxpruneError
from ctxprune.longform.segments import split_window
from ctxprune.longform.sources import FRAME_SECONDS, FrameSource
from ctxprune.runtime.decoding import GREEDY, DecodeOptions
from ctxprune.runtime.pipeline import Pipeline

PREVIOUS_TEXT_TOKENS = 223  # HF's cut-off: max_target_positions // 2 - 1


@dataclass(frozen=True)
class LongFormOptions:
    """The long-form choices; the defaults are openai-whisper's and HF's `generate` recommended ones."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = False  # HF's default; openai-whisper's CLI conditions
    language_per_window: bool = False  # detect the language of every window, not once per source
    timestamps: bool = True  # False: one segment per window, decoded with <|notimestamps|>

    def __post_init__(self):
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise CtxpruneError("temperatures must be one or more values >= 0")
        if self.no_speech_threshold is not None and self.logprob_threshold is None:
            raise CtxpruneError("the no-speech threshold needs a log-probability threshold (as upstream)")

    def judge(self, ratio: float, avg_logprob: float, no_speech: float) -> tuple[bool, bool]:
        """(decode again at the next temperature, skip the window as silence), as HF's `_need_fallback`."""
        bad = self.compression_ratio_threshold is not None and ratio > self.compression_ratio_threshold
        low = self.logprob_threshold is not None and avg_logprob < self.logprob_threshold
        silent = self.no_speech_threshold is not None and low and no_speech > self.no_speech_threshold
        return (bad or low) and not silent, silent


GREEDY_LONG_FORM = LongFormOptions((0.0,), None, None, None)  # one greedy pass, no fallback, no skipping


@dataclass(frozen=True)
class Window:
    """One window's last decoding: its tokens, the scores it was judged by, and what ran."""

    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    silent: bool  # skipped: the no-speech probability high and the log-probability low
    language: str
    keep: list[bool]  # the mask the window ran with
    flops: tuple[float, float]  # (executed, dense) FLOPs of the window
    teacher: bool = False  # the pruned decoding looped and the dense teacher decoded it again

    @property
    def flops_share(self) -> float:
        return self.flops[0] / self.flops[1]


@dataclass
class Span:
    """A decoded segment before its text: times in seconds in the file, tokens, and its window."""

    start: float
    end: float
    tokens: list[int]
    seek: int  # the window's offset in the file, in log-mel frames
    window: Window


@dataclass
class Job:
    """One source being decoded; `key` says where its spans belong (e.g. which file)."""

    key: object
    source: FrameSource | None
    language: str | None = None  # None: detect (on the first window, or every window)
    task: str | None = None  # None: the decoder's task
    prompt: list[int] = field(default_factory=list)  # text tokens before the first window (openai's prompt)
    seek: int = 0
    spans: list[Span] = field(default_factory=list)
    skipped: int = 0  # windows skipped as silence
    windows: list[Window] = field(default_factory=list)  # every window decoded, silent ones too
    conditioned: bool = True  # the last window was decoded at a low temperature
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or self.source is None or self.seek >= self.source.total_frames


def compression_ratio(tokens: list[int], vocab_size: int) -> float:
    """Raw over zlib-compressed bytes of the token ids: high when the text repeats (HF's measure)."""
    width = int(math.log2(vocab_size) / 8) + 1
    raw = b"".join(t.to_bytes(width, "little") for t in tokens)
    return len(raw) / len(zlib.compress(raw))


class LongFormDecoder:
    """Decodes jobs to spans through a runtime `pipeline` (dense or gated), `batch_size` windows at a time."""

    def __init__(
        self,
        pipeline: Pipeline,
        task: str = "transcribe",
        options: LongFormOptions = LongFormOptions(),
        decode: DecodeOptions = GREEDY,
        batch_size: int = 8,
    ):
        if batch_size < 1:
            raise CtxpruneError("--batch-size must be at least 1")
        self.pipeline, self.task, self.options, self.batch_size = pipeline, task, options, batch_size
        self.decode = replace(decode, timestamps=options.timestamps, scores=True)
        self.special = pipeline.special
        self.vocab = pipeline.gw.config.vocab_size

    def run(self, jobs: Iterable[Job], on_window: Callable[[Job, int], None] | None = None) -> Iterator[Job]:
        """Yield each job when it is finished (or failed). `on_window(job, frames)` follows every window
        with the frames its seek moved on."""
        pending, active = iter(jobs), []
        while True:
            while len(active) < self.batch_size and (job := next(pending, None)) is not None:
                if job.done:
                    yield job
                else:
                    active.append(job)
            if not active:
                return
            self.step(active, on_window)
            yield from (j for j in active if j.done)
            active = [j for j in active if not j.done]

    def step(self, jobs: list[Job], on_window: Callable[[Job, int], None] | None = None) -> list[Window]:
        """Decode the next window of every job, with fallback, and move each job's seek on; the windows
        decoded (a job whose audio fails gets its error instead)."""
        features, speech, ready = [], [], []
        reads = self.pipeline.policy.reads
        for job in jobs:
            try:
                features.append(job.source.window(job.seek))
                speech.append(job.source.speech(job.seek) if reads(SPEAKER) else None)
                ready.append(job)
            except CtxpruneError as e:
                job.error = str(e)
        if not ready:
            return []
        gw = self.pipeline.gw
        feats = torch.stack(features).to(gw.device, next(gw.parameters()).dtype)
        frames = [min(N_FRAMES, j.source.total_frames - j.seek) for j in ready]
        vectors = context_vectors(reads, speech)
        attempts = self._decode_with_fallback(ready, feats, torch.tensor(frames), vectors)
        for job, n, attempt in zip(ready, frames, attempts, strict=True):
            before = job.seek
            self._advance(job, n, attempt)
            if on_window:
                on_window(job, job.seek - before)
        return attempts

    def _decode_with_fallback(self, jobs: list[Job], feats, frames, vectors) -> list[Window]:
        o = self.options
        attempts: list[Window | None] = [None] * len(jobs)
        languages = [None if o.language_per_window else j.language for j in jobs]
        tasks = [j.task or self.task for j in jobs]
        rows = list(range(len(jobs)))
        prompt_len = len(self.special.prompt("en", self.task, o.timestamps))
        prompted = o.condition_on_previous_text or any(j.prompt for j in jobs)
        for temperature in o.temperatures:
            index = torch.tensor(rows)
            prefixes = [self._previous_text(jobs[r]) for r in rows] if prompted else None
            result = self.pipeline.run(
                feats[index.to(feats.device)], frames[index], [tasks[r] for r in rows],
                [languages[r] for r in rows], {n: v[index] for n, v in vectors.items()},
                self._at(temperature), prefixes,
            )  # fmt: skip
            flops = result.flops(self.pipeline.space, prompt_len)
            retry = []
            for i, r in enumerate(rows):
                tokens = result.tokens[i]
                logprob_sum, scored, no_speech = result.scores[i]
                ended = scored > len(tokens)  # end-of-text was chosen: it counts, as upstream
                ratio = compression_ratio(tokens + [self.special.eot] * ended, self.vocab)
                avg = logprob_sum / max(scored, 1)
                bad, silent = o.judge(ratio, avg, no_speech)
                languages[r] = result.languages[i]
                attempts[r] = Window(
                    tokens, temperature, avg, ratio, no_speech, silent, result.languages[i],
                    result.mask[i].tolist(), flops[i], bool(result.fallback and result.fallback[i]),
                )  # fmt: skip
                if bad:
                    retry.append(r)
            rows = retry
            if not rows:
                break
        return attempts

    def _at(self, temperature: float) -> DecodeOptions:
        """The window's decoding at `temperature`: sampling runs one beam (as HF's fallback)."""
        beams = self.decode.beams if temperature == 0 else 1
        return replace(self.decode, temperature=temperature, beams=beams)

    def _advance(self, job: Job, frames: int, window: Window) -> None:
        if job.language is None and not self.options.language_per_window:
            job.language = window.language  # detected on the first window, kept for the source
        job.conditioned = window.temperature < 0.5
        job.windows.append(window)
        if window.silent:
            job.seek += frames
            job.skipped += 1
            return
        piece = split_window(window.tokens, self.special.timestamp_begin, job.seek * FRAME_SECONDS, frames)
        seek = round(job.source.time(job.seek * FRAME_SECONDS) / FRAME_SECONDS)  # in the file, as openai's
        for start, end, tokens in piece.spans:
            span = Span(job.source.time(start), job.source.time(end, end=True), tokens, seek, window)
            job.spans.append(span)
        job.seek += piece.advance

    def _previous_text(self, job: Job) -> list[int]:
        """`<|startofprev|>`, the job's prompt and, when conditioning, the last tokens of every segment so
        far (HF drops a segment's closing timestamp where it ends on a pair). As openai-whisper, the prompt
        leads the first window, or every window while conditioning until a window decodes at a high
        temperature; after that, nothing."""
        first = job.seek == 0 and not job.spans
        if not job.conditioned or not (first or self.options.condition_on_previous_text):
            return []
        begin = self.special.timestamp_begin
        tokens = list(job.prompt)
        for span in job.spans:
            t = span.tokens
            tokens += t[:-1] if len(t) > 2 and t[-2] >= begin else t
        return [self.special.start_of_previous, *tokens[-PREVIOUS_TEXT_TOKENS:]] if tokens else []
