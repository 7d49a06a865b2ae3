"""Start a server: what it serves and how (`ServeConfig`), on uvicorn in this process, or with the
models on Ray Serve replicas (`replicas` > 0)."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.runtime.decoding import GUARDED, DecodeOptions
from ctxprune.serve.api import LIMITS, Limits, create_app
from ctxprune.serve.scheduler import BatchingOptions
from ctxprune.stack import StackSpec


@dataclass(frozen=True)
class ServeConfig:
    gate_sets: list[Path] = field(default_factory=list)
    spec: StackSpec = StackSpec()
    decode: DecodeOptions = GUARDED
    batching: BatchingOptions = BatchingOptions()
    limits: Limits = LIMITS
    replicas: int = 0  # 0: the models in this process; else Ray Serve replicas

    def __post_init__(self):
        for g in self.gate_sets:
            if not (Path(g) / "predictor.json").is_file():
                raise CtxpruneError(f"{g}: not a gate set (no predictor.json); see artifacts/gates")
        if self.replicas < 0:
            raise CtxpruneError("--replicas must be at least 1")


def build_backend(config: ServeConfig):
    if config.replicas:
        from ctxprune.serve.ray_app import RayBackend

        return RayBackend(config)
    from ctxprune.serve.local import LocalBackend
    from ctxprune.serve.models import ServedModels

    models = ServedModels(config.gate_sets, config.spec, config.decode, max_batch=config.batching.max_batch)
    return LocalBackend(models, config.batching)


def run_server(config: ServeConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight (up to the request timeout)."""
    import uvicorn

    from ctxprune.progress import stderr

    backend = build_backend(config)
    app = create_app(backend, config.limits)
    b = config.batching
    policy = (
        f"{config.replicas} Ray Serve replica(s), @serve.batch" if config.replicas else f"{b.policy} batching"
    )
    stderr.print(
        f"serving {', '.join(backend.names)} on http://{host}:{port} ({config.spec.device}; {policy}, "
        f"up to {b.max_batch} windows, {b.max_wait_s * 1000:g} ms wait, queue {b.max_queue})"
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found:
    # this one, so that a finished shutdown exits 0 rather than dying of the signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=int(config.limits.timeout_s),
    )  # fmt: skip
    stderr.print(f"stopped: {app.state.server.metrics.summary()}")
