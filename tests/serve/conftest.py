"""A real server for the tests: the app on uvicorn in a thread, on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
import uvicorn

from ctxprune.paths import ARTIFACTS
from ctxprune.serve.api import LIMITS, Limits, create_app
from ctxprune.serve.local import LocalBackend
from ctxprune.serve.models import ServedModels
from ctxprune.serve.scheduler import BatchingOptions

CLIP = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
CLIP_TEXT = "He was not an ill-disposed young man."
STATIC = ARTIFACTS / "gates" / "decoder-flops-0.5-static"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url + "/health").status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not become healthy in {seconds:g} s")


@contextmanager
def running(backend, limits: Limits = LIMITS) -> Iterator[str]:
    """Serve `backend` until the block ends (then shut down gracefully, as on SIGTERM); the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend, limits), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture(scope="session")
def served_models() -> ServedModels:
    """Whisper base, dense and under the shipped static gate set (loaded once)."""
    return ServedModels([STATIC], max_batch=8)


@pytest.fixture(scope="module")
def server_url(served_models) -> Iterator[str]:
    with running(LocalBackend(served_models, BatchingOptions(max_wait_s=0.005))) as url:
        yield url
