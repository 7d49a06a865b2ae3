"""The server's batcher: requests from many clients become batches of 30 s windows, one decode step at a
time, on one worker thread that owns the model (and the GPU).

Requests wait in one bounded queue. Each belongs to a lane: the model (dense or a gate set) and the
temperature schedule, so that one pipeline decodes one lane's windows in one call; under `grouped`
batching a context-aware gate set's lane is split further by the context its masks depend on most
(task and requested language), so that a step holds fewer distinct masks. Three ways to form batches,
measured against each other by `bench/serve_load.py`:

- `static`: wait up to `max_wait_s` for up to `max_batch` requests of one lane, then decode them to the
  end; later arrivals wait for the next batch (dynamic batching as Triton or Ray's `@serve.batch` do it);
- `continuous`: the same start, but at every window boundary queued requests of the lane join the batch
  where a finished request left a row (a long file does not hold the short ones back);
- `grouped`: continuous, with lanes split by context as above.

Inside a step the runtime runs the encoder once for the whole batch and decodes in groups of equal
mask (`runtime.decoding`); the lane's step is `LongFormDecoder.step`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ctxprune.errors import CtxpruneError
from ctxprune.longform.decoder import Job, LongFormDecoder, Window

BATCHING = ("static", "continuous", "grouped")
CANCELLED = "the request timed out"


class QueueFull(CtxpruneError):
    """The queue holds `max_queue` requests already; the caller should retry later."""


class ShuttingDown(CtxpruneError):
    """The server is finishing what it holds and takes no new work."""


@dataclass
class Request:
    """One client request: its job, where its windows decode, and the future its handler awaits."""

    job: Job
    model: str
    temperatures: tuple[float, ...]
    context: tuple = ()  # what a context-aware mask depends on; splits lanes under `grouped`
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    started: float | None = None  # when its first window was decoded

    def cancel(self) -> None:
        """Stop decoding it at the next window boundary (its handler gave up waiting)."""
        self.job.error = self.job.error or CANCELLED


@dataclass(frozen=True)
class BatchingOptions:
    policy: str = "continuous"
    max_batch: int = 8  # windows decoded together
    max_wait_s: float = 0.01  # how long a new batch waits for more requests
    max_queue: int = 64  # requests waiting for a batch; beyond this, refused

    def __post_init__(self):
        if self.policy not in BATCHING:
            raise CtxpruneError(f"batching must be one of {', '.join(BATCHING)}, got {self.policy!r}")
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait_s < 0:
            raise CtxpruneError("max batch and max queue must be at least 1, max wait at least 0")


StepHook = Callable[[str, list[Window], float], None]


class Scheduler:
    """Owns the decoders; `submit` from any thread, one worker thread decodes. `decoder_for(model,
    temperatures)` returns the lane's `LongFormDecoder`; `reads_context(model)` whether the model's masks
    depend on the request; `on_step(model, windows, seconds)` follows every step (metrics)."""

    def __init__(
        self,
        decoder_for: Callable[[str, tuple[float, ...]], LongFormDecoder],
        reads_context: Callable[[str], bool],
        options: BatchingOptions = BatchingOptions(),
        on_step: StepHook | None = None,
    ):
        self.decoder_for, self.reads_context, self.options = decoder_for, reads_context, options
        self.on_step = on_step
        self.queue: list[Request] = []
        self.active: dict[tuple, list[Request]] = {}  # lane -> requests being decoded
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="ctxprune-scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish every request already accepted, then end the worker."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        self._thread.join()

    @property
    def depth(self) -> int:
        with self._ready:
            return len(self.queue)

    @property
    def in_flight(self) -> int:
        with self._ready:
            return sum(len(rs) for rs in self.active.values())

    def submit(self, request: Request) -> Future:
        with self._ready:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self.queue) >= self.options.max_queue:
                raise QueueFull(f"the queue is full ({self.options.max_queue} requests waiting)")
            self.queue.append(request)
            self._ready.notify_all()
        return request.future

    def lane(self, r: Request) -> tuple:
        grouped = self.options.policy == "grouped" and self.reads_context(r.model)
        return (r.model, r.temperatures, r.context if grouped else ())

    # the worker thread

    @staticmethod
    def _hand_back(r: Request, error: BaseException | None = None) -> None:
        """Resolve a finished (or failed) request; its audio's device tensors are dropped here, on the
        thread that owns the GPU (freed on another thread, they could break a CUDA graph being captured)."""
        r.job.source = None
        if r.future.done():
            return
        if error is None:
            r.future.set_result(r.job)
        else:
            r.future.set_exception(error)

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # never leave requests waiting on a dead worker
            with self._ready:
                self._stopping = True
                waiting = self.queue + [r for rs in self.active.values() for r in rs]
                self.queue, self.active = [], {}
            for r in waiting:
                self._hand_back(r, e)
            raise

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self.queue and not self.active and not self._stopping:
                    self._ready.wait()
                if not self.queue and not self.active:
                    return  # stopping, and nothing is left
                lane = self._next_lane()
                self._admit(lane)
                batch = self.active.get(lane, [])
            if batch:
                self._step(lane, batch)

    def _next_lane(self) -> tuple:
        """The lane of the oldest request, running or queued (no lane starves)."""
        running = [rs[0] for rs in self.active.values()]
        return self.lane(min(running + self.queue[:1], key=lambda r: r.arrived))

    def _admit(self, lane: tuple) -> None:
        """Move queued requests of `lane` into its batch. A new batch first waits up to `max_wait_s`
        (counted from its oldest request) for `max_batch` of them; under `static` a running batch
        takes nobody in."""
        o = self.options
        running = self.active.setdefault(lane, [])
        if running and o.policy == "static":
            return
        if not running:
            deadline = min((r.arrived for r in self.queue if self.lane(r) == lane), default=0) + o.max_wait_s
            while (
                not self._stopping
                and sum(self.lane(r) == lane for r in self.queue) < o.max_batch
                and (left := deadline - time.monotonic()) > 0
            ):
                self._ready.wait(left)
        for r in list(self.queue):
            if len(running) >= o.max_batch:
                break
            if self.lane(r) == lane:
                self.queue.remove(r)
                if r.job.done:  # cancelled while it waited
                    self._hand_back(r)
                else:
                    running.append(r)
        if not running:
            del self.active[lane]

    def _step(self, lane: tuple, batch: list[Request]) -> None:
        """One window of every request in the batch; finished ones are handed back."""
        model, temperatures, _ = lane
        t0 = time.monotonic()
        live = [r for r in batch if not r.job.done]  # not those cancelled since the last step
        for r in live:
            r.started = r.started or t0
        try:
            windows = self.decoder_for(model, temperatures).step([r.job for r in live]) if live else []
        except Exception as e:  # a failed step fails its requests, not the server
            with self._ready:
                self.active.pop(lane, None)
            for r in batch:
                self._hand_back(r, e)
            return
        if self.on_step and live:
            self.on_step(model, windows, time.monotonic() - t0)
        with self._ready:
            done = [r for r in batch if r.job.done]
            running = [r for r in batch if not r.job.done]
            if running:
                self.active[lane] = running
            else:
                self.active.pop(lane, None)
        for r in done:
            self._hand_back(r)
