"""The same models on a Ray Serve replica (a local Ray instance on CPU), behind the same API."""

from __future__ import annotations

import concurrent.futures
import re

import httpx2
import pytest

from ctxprune.serve.run import ServeConfig, build_backend
from ctxprune.serve.scheduler import BatchingOptions
from tests.serve.conftest import CLIP, CLIP_TEXT, STATIC, running
from tests.serve.test_api import LIBRIVOX, assert_error, client, post, upload, words

pytestmark = pytest.mark.real


def test_ray_serve_replica_answers_like_the_local_server(served_models):
    config = ServeConfig([STATIC], batching=BatchingOptions(max_batch=4, max_wait_s=0.05), replicas=1)
    with running(build_backend(config)) as url:
        with open(CLIP, "rb") as f:
            text = client(url).audio.transcriptions.create(model=STATIC.name, file=f, language="en").text
        assert_error(
            post(url, {"file": ("notes.txt", b"not audio")}, model="dense"), 400, "file", "notes.txt"
        )
        with concurrent.futures.ThreadPoolExecutor(5) as pool:  # @serve.batch gathers these
            answers = list(pool.map(lambda p: post(url, upload(p), model="dense", language="en"), LIBRIVOX))
        assert "ctxprune_request_seconds" in httpx2.get(url + "/metrics").text
    local = served_models["dense"].transcribe(LIBRIVOX, language="en")
    assert words(text) == words(served_models[STATIC.name].transcribe([CLIP], language="en")[0].text)
    assert re.search("young man", text)
    assert [a.json()["text"] for a in answers] == [t.text for t in local]
    assert words(CLIP_TEXT) in [words(t.text) for t in local]
