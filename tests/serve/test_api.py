"""The server on the real Whisper base: OpenAI's client unchanged, every bad input answered with a 4xx in
OpenAI's error shape (and the server still serving), back-pressure, timeouts, metrics, shutdown."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx2
import numpy as np
import openai
import pytest
import soundfile as sf

from ctxprune.serve.api import Limits
from ctxprune.serve.local import LocalBackend
from ctxprune.serve.scheduler import BatchingOptions
from tests.serve.conftest import CLIP, CLIP_TEXT, STATIC, free_port, running, wait_healthy

pytestmark = pytest.mark.real
LIBRIVOX = sorted(Path(CLIP).parent.glob("*.wav"))


def words(text: str) -> str:
    return re.sub(r"[^a-z' ]", "", text.lower()).strip()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def post(url: str, files=None, route="transcriptions", **fields) -> httpx2.Response:
    files = files if files is not None else {"file": ("clip.wav", Path(CLIP).read_bytes())}
    return httpx2.post(f"{url}/v1/audio/{route}", files=files, data=fields, timeout=120)


def upload(path: Path) -> dict:
    return {"file": (path.name, path.read_bytes())}


def assert_error(response: httpx2.Response, status: int, param: str | None, says: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and says in error["message"] and "\n" not in error["message"]


def test_the_openai_client_works_unchanged(server_url):
    c = client(server_url)
    assert {m.id for m in c.models.list()} == {"dense", STATIC.name}
    with open(CLIP, "rb") as f:
        assert words(c.audio.transcriptions.create(model="dense", file=f, language="en").text) == words(
            CLIP_TEXT
        )
    with open(CLIP, "rb") as f:
        verbose = c.audio.transcriptions.create(model=STATIC.name, file=f, response_format="verbose_json")
    assert verbose.language == "english" and abs(verbose.duration - 2.99) < 0.01
    assert 0 < verbose.segments[0].start < verbose.segments[0].end <= verbose.duration
    extra = verbose.model_extra["ctxprune"]
    assert extra["model"] == STATIC.name and 0.5 < extra["flops_executed_share"] < 1
    assert len(extra["modules"]) == len(extra["module_ran_share"]) == 30 and 0 in extra["module_ran_share"]
    ran = verbose.model_extra["segments"][0]["gates"]["ran"] if verbose.model_extra.get("segments") else None
    ran = ran or verbose.segments[0].model_extra["gates"]["ran"]
    assert len(ran) == sum(extra["module_ran_share"])  # one window: its mask
    with open(CLIP, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the client's, about its own translations call
        srt = c.audio.translations.create(model="dense", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,") and "young man" in srt
    with open(CLIP, "rb") as f:
        text = c.audio.transcriptions.create(model="dense", file=f, response_format="text", language="en")
    assert words(text) == words(CLIP_TEXT)


def test_vtt_and_a_prompt(server_url):
    vtt = post(server_url, model="dense", response_format="vtt", language="en")
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT\n\n00:00.") and "young man" in vtt.text
    prompted = post(server_url, model="dense", language="en", prompt="Sense and Sensibility, by Jane Austen.")
    assert prompted.status_code == 200 and "young man" in prompted.json()["text"]


def test_concurrent_requests_each_get_their_own_text(server_url):
    """Five different clips at once, twice each, on both models: every answer is the text that clip gets
    alone (nothing swapped, nothing lost)."""
    pairs = [(p, m) for p in LIBRIVOX for m in ("dense", STATIC.name)]
    alone = {(p, m): post(server_url, upload(p), model=m, language="en").json()["text"] for p, m in pairs}

    async def all_at_once():
        async with httpx2.AsyncClient(timeout=120) as http:
            jobs = pairs * 2
            answers = await asyncio.gather(*[
                http.post(f"{server_url}/v1/audio/transcriptions", files={"file": (p.name, p.read_bytes())},
                          data={"model": m, "language": "en"}) for p, m in jobs
            ])  # fmt: skip
            return jobs, answers

    jobs, answers = asyncio.run(all_at_once())
    assert len(LIBRIVOX) == 5
    for job, answer in zip(jobs, answers, strict=True):
        assert answer.status_code == 200 and answer.json()["text"] == alone[job]


def test_every_bad_input_gets_a_4xx_and_the_server_keeps_serving(server_url, tmp_path):
    audio = {"file": ("clip.wav", Path(CLIP).read_bytes())}
    cases = [
        (
            post(server_url, {"file": ("notes.txt", b"not audio at all")}, model="dense"),
            400,
            "file",
            "notes.txt",
        ),
        (post(server_url, {"file": ("empty.wav", b"")}, model="dense"), 400, "file", "empty"),
        (post(server_url, model="whisper-1"), 404, "model", "served: dense"),
        (post(server_url, model="dense", language="xx"), 400, "language", "ISO-639-1"),
        (post(server_url, model="dense", response_format="docx"), 400, "response_format", "verbose_json"),
        (post(server_url, model="dense", temperature="1.5"), 400, "temperature", "between 0 and 1"),
        (post(server_url, model="dense", temperature="warm"), 400, "temperature", "temperature"),
        (post(server_url, {}, model="dense"), 400, "file", "missing required field 'file'"),
        (post(server_url, audio), 400, "model", "missing required field 'model'"),
        (post(server_url, audio, route="summaries", model="dense"), 404, None, "Not Found"),
    ]
    for response, status, param, says in cases:
        assert_error(response, status, param, says)
        good = post(server_url, model="dense", language="en")
        assert good.status_code == 200 and words(good.json()["text"]) == words(CLIP_TEXT)


def test_uploads_and_audio_over_the_limits_get_413(served_models, tmp_path):
    ten_seconds = tmp_path / "ten.wav"
    sf.write(ten_seconds, np.zeros(160_000, dtype=np.float32), 16_000, subtype="PCM_16")  # 320 kB
    limits = Limits(max_upload_mb=0.2, max_audio_s=2.0)
    with running(LocalBackend(served_models, BatchingOptions()), limits) as url:
        too_big = post(url, {"file": ("ten.wav", ten_seconds.read_bytes())}, model="dense")
        assert_error(too_big, 413, "file", "over 0.2 MB")
        too_long = post(url, model="dense")  # 2.99 s, 96 kB
        assert_error(too_long, 413, "file", "at most 2 s")
        assert "ctxprune_requests_total" in httpx2.get(url + "/metrics").text


def _held(backend: LocalBackend) -> threading.Event:
    """Hold every decoding step until the returned event is set."""
    release, decoder_for = threading.Event(), backend.scheduler.decoder_for

    class Held:
        def __init__(self, decoder):
            self.decoder = decoder

        def step(self, jobs, on_window=None):
            release.wait(60)
            return self.decoder.step(jobs, on_window)

    backend.scheduler.decoder_for = lambda model, temps: Held(decoder_for(model, temps))
    return release


def test_a_full_queue_answers_429_with_retry_after_and_loses_nothing(served_models):
    backend = LocalBackend(served_models, BatchingOptions(max_batch=1, max_wait_s=0.0, max_queue=1))
    release = _held(backend)
    with running(backend) as url:

        def send(out: list):
            out.append(post(url, model="dense", language="en"))

        answers: list = []
        first = threading.Thread(target=send, args=(answers,))
        first.start()
        while httpx2.get(url + "/health").json()["in_flight"] < 1:
            time.sleep(0.02)
        second = threading.Thread(target=send, args=(answers,))
        second.start()
        while httpx2.get(url + "/health").json()["queued"] < 1:
            time.sleep(0.02)
        refused = post(url, model="dense")
        assert_error(refused, 429, None, "queue is full")
        assert int(refused.headers["Retry-After"]) >= 1
        with pytest.raises(openai.RateLimitError), open(CLIP, "rb") as f:
            client(url).audio.transcriptions.create(model="dense", file=f)
        release.set()
        first.join()
        second.join()
    assert [a.status_code for a in answers] == [200, 200]
    assert all(words(a.json()["text"]) == words(CLIP_TEXT) for a in answers)


def test_a_request_past_its_timeout_gets_504_and_the_server_keeps_serving(served_models):
    backend = LocalBackend(served_models, BatchingOptions(max_wait_s=0.0))
    release = _held(backend)
    with running(backend, Limits(timeout_s=3.0)) as url:
        assert_error(post(url, model="dense"), 504, None, "timeout")
        release.set()
        good = post(url, model="dense", language="en")
        assert good.status_code == 200 and words(good.json()["text"]) == words(CLIP_TEXT)
        metrics = httpx2.get(url + "/metrics").text
    assert 'ctxprune_requests_total{endpoint="/v1/audio/transcriptions",status="504"} 1.0' in metrics
    assert re.search(r'ctxprune_batch_windows_count\{model="dense"\} [1-9]', metrics)
    assert re.search(r'ctxprune_flops_total\{kind="dense",model="dense"\} [1-9]', metrics)


@pytest.fixture()
def long(tmp_path) -> Path:
    """89 s: the five LibriVox clips three times, 1 s apart (three 30 s windows at least)."""
    path = tmp_path / "long.wav"
    clips = [sf.read(p, dtype="float32")[0] for p in LIBRIVOX]
    gap = np.zeros(16_000, dtype=np.float32)
    sf.write(path, np.concatenate([x for c in clips * 3 for x in (c, gap)]), 16_000)
    return path


def test_a_client_that_leaves_stops_its_request_at_the_next_window(served_models, long):
    backend = LocalBackend(served_models, BatchingOptions(max_wait_s=0.0))
    release = _held(backend)
    with running(backend) as url:
        with pytest.raises(httpx2.TimeoutException):
            httpx2.post(
                f"{url}/v1/audio/transcriptions", files=upload(long), data={"model": "dense"}, timeout=1.0
            )
        time.sleep(1.0)  # the handler polls for the disconnect
        release.set()
        while httpx2.get(url + "/health").json()["in_flight"]:
            time.sleep(0.05)
        good = post(url, model="dense", language="en")
        assert good.status_code == 200 and words(good.json()["text"]) == words(CLIP_TEXT)
        metrics = httpx2.get(url + "/metrics").text
    assert 'ctxprune_requests_total{endpoint="/v1/audio/transcriptions",status="499"} 1.0' in metrics
    # the long file's first window (already decoding) and the good request's one: nothing more
    assert 'ctxprune_batch_windows_count{model="dense"} 2.0' in metrics


def test_sigterm_finishes_the_request_in_flight(long):
    """`ctxprune serve` as a user starts it; SIGTERM while a 89 s file decodes: the answer still
    comes, complete, and the process exits cleanly."""
    port = free_port()
    cli = [sys.executable, "-m", "ctxprune.cli", "serve", "--port", str(port), "--gates", str(STATIC)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        answers: list = []
        sender = threading.Thread(target=lambda: answers.append(post(url, upload(long), model="dense")))
        sender.start()
        while httpx2.get(url + "/health").json()["in_flight"] < 1:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        sender.join(timeout=300)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped: 1 audio requests answered (200: 1), 1.5 min of audio" in " ".join(err.split())
    assert answers[0].status_code == 200
    assert answers[0].json()["text"].lower().count("young man") == 3
