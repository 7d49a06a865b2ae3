"""The in-process backend of `ctxprune serve`: the served models and the scheduler in this process.

A request's audio becomes one job of the long-form path (`Transcriber.file_job`: any length, streamed
from its file); the scheduler decodes it window by window among other requests; the caller awaits it
without holding a thread. A request that waits past its deadline is cancelled at the next window
boundary and answered 504.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ctxprune.errors import CtxpruneError
from ctxprune.longform.decoder import Job
from ctxprune.longform.segments import Transcript
from ctxprune.serve.errors import ApiError
from ctxprune.serve.metrics import ServerMetrics
from ctxprune.serve.models import ServedModels
from ctxprune.serve.responses import usage
from ctxprune.serve.scheduler import BatchingOptions, QueueFull, Request, Scheduler, ShuttingDown
from ctxprune.transcriber import Transcriber

POLL_S = 0.25  # how often a waiting handler looks for its client's disconnect
Disconnected = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class AudioRequest:
    """A checked request: its audio file, the model, what to do with it, and by when."""

    path: str
    filename: str  # as the client named the upload (errors name it, not our temporary file)
    model: str
    task: str
    language: str  # a code, or "auto"
    prompt: str
    temperatures: tuple[float, ...]
    arrived: float  # time.monotonic()
    deadline: float  # time.monotonic() by which it must be answered
    max_audio_s: float
    snap: bool


def open_request(transcriber: Transcriber, a: AudioRequest, key: object) -> tuple[Transcript, Job]:
    """The request's audio as one job of the long-form path, or the 4xx it deserves."""
    try:
        transcriber.check_request(a.task, a.language)
    except CtxpruneError as e:
        raise ApiError(400, str(e), "language") from None
    try:
        result, job = transcriber.file_job(key, a.path, a.task, a.language, a.prompt)
    except CtxpruneError as e:
        message = str(e).replace(a.path, a.filename)
        raise ApiError(400, f"could not read the audio: {message}", "file", "invalid_audio") from None
    if result.duration > a.max_audio_s:
        long = f"the audio is {result.duration:.0f} s long; this server takes at most {a.max_audio_s:.0f} s"
        raise ApiError(413, long, "file", "audio_too_long")
    return result, job


def finish_request(transcriber: Transcriber, a: AudioRequest, result: Transcript, job: Job) -> dict:
    """Once its job is decoded: the transcript complete (segments snapped onto speech) and what ran."""
    transcriber.collect(result, job)
    transcriber.finish(result, a.snap)
    return usage(job, transcriber.stack.space.names)


class LocalBackend:
    """`ServedModels` decoded by a `Scheduler` on a worker thread of this process."""

    def __init__(self, models: ServedModels, batching: BatchingOptions):
        self.models, self.batching = models, batching
        self.scheduler = Scheduler(models.decoder, models.reads_context, batching, self._on_step)
        self.metrics: ServerMetrics | None = None  # set by the server
        self.ids = itertools.count()
        self._step_seconds = 1.0  # a running mean, for Retry-After

    names = property(lambda self: self.models.names)

    def modules(self, name: str) -> list[str]:
        return list(self.models[name].stack.space.names)

    def reads_context(self, name: str) -> bool:
        return self.models.reads_context(name)

    def depth(self) -> int:
        return self.scheduler.depth

    def in_flight(self) -> int:
        return self.scheduler.in_flight

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def _on_step(self, model: str, windows, seconds: float) -> None:
        if self.metrics:
            self.metrics.step(model, windows, seconds)
        self._step_seconds = 0.9 * self._step_seconds + 0.1 * seconds

    def retry_after(self) -> str:
        """Seconds until the queue has room, roughly: its depth in batches times a step."""
        batches = self.scheduler.depth / self.batching.max_batch
        return str(max(1, math.ceil(batches * self._step_seconds)))

    async def transcribe(self, a: AudioRequest, gone: Disconnected | None = None) -> tuple[Transcript, dict]:
        transcriber = self.models[a.model]
        result, job = await asyncio.to_thread(open_request, transcriber, a, next(self.ids))
        request = Request(job, a.model, a.temperatures, (a.task, a.language), a.arrived)
        await self._decode(request, a.deadline, gone)
        ran = await asyncio.to_thread(finish_request, transcriber, a, result, job)
        started = request.started or a.arrived
        if self.metrics:
            self.metrics.queue_wait.labels(a.model).observe(started - a.arrived)
        return result, ran | {"queue_s": round(started - a.arrived, 3)}

    async def _decode(self, request: Request, deadline: float, gone: Disconnected | None) -> None:
        """Wait for the request's job; stop it at the next window boundary when its deadline passes or
        its client goes away (`gone()`, polled), as vLLM aborts a request whose client left."""
        try:
            future = self.scheduler.submit(request)
        except QueueFull as e:
            retry = {"Retry-After": self.retry_after()}
            raise ApiError(429, f"{e}; retry later", code="queue_full", headers=retry) from None
        except ShuttingDown as e:
            raise ApiError(503, str(e), code="shutting_down") from None
        waiting = asyncio.wrap_future(future)
        while not waiting.done():
            left = deadline - time.monotonic()
            if left <= 0:
                request.cancel()
                raise ApiError(504, "the request took longer than the server's timeout", code="timeout")
            await asyncio.wait({waiting}, timeout=min(left, POLL_S))
            if not waiting.done() and gone is not None and await gone():
                request.cancel()
                raise ApiError(499, "the client closed the connection", code="client_closed")
        waiting.result()  # a failed step raises here (answered 500)
