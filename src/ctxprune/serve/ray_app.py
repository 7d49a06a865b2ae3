"""`ctxprune serve --ray`: the same models on Ray Serve replicas (one per GPU on CUDA), behind the same
API. The FastAPI app stays in this process (limits, errors, metrics, the web page); each request's audio
goes to a replica through a deployment handle, and a replica decodes the requests Ray's `@serve.batch`
gathers (up to the max batch within the max wait) as one batch of the long-form path: static batching,
the form Ray Serve gives. Ray's own back-pressure (`max_queued_requests`) answers 429.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.longform.segments import Transcript
from ctxprune.serve.errors import ApiError
from ctxprune.serve.local import AudioRequest, finish_request, open_request

try:
    with warnings.catch_warnings():  # Ray's own pydantic deprecations, nothing a user can change
        warnings.simplefilter("ignore", DeprecationWarning)
        import ray
        from ray import serve
        from ray.serve.exceptions import BackPressureError
except ImportError as e:  # an optional extra
    raise CtxpruneError("--ray needs Ray Serve: pip install 'ctxprune[ray]'") from e

Outcome = tuple[Transcript, dict] | tuple[int, str, str | None, str | None]  # an answer, or an error


@serve.deployment(name="ctxprune")
class Replica:
    """One copy of the served models; `decode` is batched by Ray Serve."""

    def __init__(self, config):
        from ctxprune.serve.models import ServedModels

        self.models = ServedModels(
            config.gate_sets, config.spec, config.decode, max_batch=config.batching.max_batch
        )
        self.decode.set_max_batch_size(config.batching.max_batch)
        self.decode.set_batch_wait_timeout_s(config.batching.max_wait_s)
        self.ids = itertools.count()

    def names(self) -> list[tuple[str, bool, list[str]]]:
        return [
            (n, self.models.reads_context(n), list(self.models[n].stack.space.names))
            for n in self.models.names
        ]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def decode(self, items: list[tuple[AudioRequest, bytes]]) -> list[Outcome]:
        return await asyncio.to_thread(self._decode, items)

    def _decode(self, items: list[tuple[AudioRequest, bytes]]) -> list[Outcome]:
        """Open every request's audio, decode each lane's jobs together, finish each request."""
        outcomes: list[Outcome | None] = [None] * len(items)
        opened, lanes, requests = {}, defaultdict(list), []
        with tempfile.TemporaryDirectory(prefix="ctxprune-replica-") as tmp:
            for i, (a, audio) in enumerate(items):
                path = Path(tmp) / f"{i}{Path(a.filename).suffix[:10]}"
                path.write_bytes(audio)
                requests.append(replace(a, path=str(path)))
            for i, a in enumerate(requests):
                try:
                    opened[i] = open_request(self.models[a.model], a, next(self.ids))
                except ApiError as e:
                    outcomes[i] = (e.status, e.message, e.param, e.code)
                    continue
                lanes[(a.model, a.temperatures)].append(i)
            for (model, temperatures), rows in lanes.items():
                list(self.models.decoder(model, temperatures).run([opened[i][1] for i in rows]))
                for i in rows:
                    result, job = opened[i]
                    outcomes[i] = result, finish_request(self.models[model], requests[i], result, job)
        return outcomes


class RayBackend:
    """Starts a local Ray instance (or joins `RAY_ADDRESS`) and the replicas; the app calls `transcribe`."""

    def __init__(self, config):
        self.config = config
        gpu = str(config.spec.device).startswith("cuda")
        for name in ("ray", "ray.serve"):  # their INFO lines and the local cluster's auth notice
            logging.getLogger(name).setLevel(logging.ERROR)
        ray.init(
            include_dashboard=False, log_to_driver=False, logging_level="ERROR", ignore_reinit_error=True
        )
        serve.start(
            proxy_location="Disabled", logging_config={"log_level": "WARNING"}
        )  # our app is the front
        deployment = Replica.options(
            num_replicas=config.replicas,
            ray_actor_options={"num_gpus": 1} if gpu else {"num_cpus": 1},
            max_ongoing_requests=2 * config.batching.max_batch,
            max_queued_requests=config.batching.max_queue,
        )
        self.handle = serve.run(deployment.bind(config), name="ctxprune", route_prefix=None)
        self.served = self.handle.names.remote().result()
        self.names = [n for n, _, _ in self.served]
        self.metrics = None
        self.pending = 0

    def modules(self, name: str) -> list[str]:
        return next(m for n, _, m in self.served if n == name)

    def reads_context(self, name: str) -> bool:
        return next(c for n, c, _ in self.served if n == name)

    def depth(self) -> int:
        return max(self.pending - self.config.replicas * 2 * self.config.batching.max_batch, 0)

    def in_flight(self) -> int:
        return self.pending

    def start(self) -> None:
        pass

    def stop(self) -> None:
        """Requests in flight were answered before this (uvicorn's graceful shutdown); then Ray stops."""
        serve.delete("ctxprune")  # our application only (a cluster we joined keeps running)
        ray.shutdown()

    async def transcribe(self, a: AudioRequest, gone=None) -> tuple[Transcript, dict]:
        """`gone` (the client left) is not polled here: Ray cancels on the timeout only."""
        audio = await asyncio.to_thread(Path(a.path).read_bytes)
        self.pending += 1
        try:
            response = self.handle.decode.remote((a, audio))
            try:
                outcome = await asyncio.wait_for(response, max(a.deadline - time.monotonic(), 0))
            except TimeoutError:
                response.cancel()
                raise ApiError(
                    504, "the request took longer than the server's timeout", code="timeout"
                ) from None
            except BackPressureError:
                retry = {"Retry-After": "1"}
                raise ApiError(
                    429, "the replicas' queues are full; retry later", code="queue_full", headers=retry
                ) from None
        finally:
            self.pending -= 1
        if isinstance(outcome[0], int):
            raise ApiError(*outcome)
        return outcome
