"""The batcher on a fake decoder: which requests share a step, under each batching policy."""

from __future__ import annotations

import threading
import time

import pytest

from ctxprune.longform.decoder import Job, Window
from ctxprune.serve.scheduler import CANCELLED, BatchingOptions, QueueFull, Request, Scheduler, ShuttingDown


class Source:
    def __init__(self, windows: int):
        self.total_frames = 3000 * windows


class FakeDecoder:
    """Moves every job one window on per step and records each step's request keys; `gate` (an Event)
    holds a step until it is set."""

    def __init__(self, gate: threading.Event | None = None, fail_on: object = None):
        self.steps: list[list[object]] = []
        self.gate, self.fail_on = gate, fail_on

    def step(self, jobs: list[Job]) -> list[Window]:
        if self.gate:
            self.gate.wait(10)
        self.steps.append([j.key for j in jobs])
        if any(j.key == self.fail_on for j in jobs):
            raise RuntimeError("boom")
        for j in jobs:
            j.seek += 3000
        keep = [True, False]
        return [Window([], 0.0, 0.0, 1.0, 0.0, False, "en", keep, (1.0, 2.0)) for _ in jobs]


def request(key, windows=1, model="dense", context=("transcribe", "en")) -> Request:
    return Request(Job(key, Source(windows)), model, (0.0,), context)


def scheduler(decoder, policy="continuous", max_batch=4, max_queue=16, wait=0.05, reads_context=False):
    options = BatchingOptions(policy, max_batch, wait, max_queue)
    return Scheduler(lambda model, temps: decoder, lambda model: reads_context, options)


def wait_all(requests):
    return [r.future.result(timeout=10) for r in requests]


def test_requests_arriving_within_the_wait_share_a_batch():
    d = FakeDecoder()
    s = scheduler(d, max_batch=4).start()
    rs = [request(i) for i in range(3)]
    for r in rs:
        s.submit(r)
    wait_all(rs)
    s.stop()
    assert d.steps == [[0, 1, 2]]


@pytest.mark.parametrize(("policy", "joins"), [("continuous", True), ("static", False)])
def test_later_arrivals_join_a_running_batch_only_when_continuous(policy, joins):
    gate = threading.Event()
    d = FakeDecoder(gate)
    s = scheduler(d, policy, max_batch=4, wait=0.0).start()
    long_one = request("long", windows=3)
    s.submit(long_one)
    time.sleep(0.1)  # the long request's first step is running (held by the gate)
    late = request("late")
    s.submit(late)
    gate.set()
    wait_all([long_one, late])
    s.stop()
    if joins:
        assert d.steps == [["long"], ["long", "late"], ["long"]]
    else:
        assert d.steps == [["long"], ["long"], ["long"], ["late"]]


def test_a_batch_never_exceeds_max_batch_and_keeps_arrival_order():
    d = FakeDecoder()
    s = scheduler(d, max_batch=2, wait=0.05).start()
    rs = [request(i) for i in range(5)]
    for r in rs:
        s.submit(r)
    wait_all(rs)
    s.stop()
    assert d.steps == [[0, 1], [2, 3], [4]]


def test_models_never_share_a_step_and_grouped_splits_context_aware_lanes():
    d = FakeDecoder()
    s = scheduler(d, "grouped", max_batch=8, wait=0.05, reads_context=True).start()
    rs = [
        request("a-en", context=("transcribe", "en")),
        request("b-de", context=("transcribe", "de")),
        request("c-en", context=("transcribe", "en")),
        request("d-static", model="static", context=("transcribe", "en")),
    ]
    for r in rs:
        s.submit(r)
    wait_all(rs)
    s.stop()
    assert sorted(map(sorted, d.steps)) == [["a-en", "c-en"], ["b-de"], ["d-static"]]


def test_a_full_queue_refuses_and_a_stopped_scheduler_refuses():
    gate = threading.Event()
    d = FakeDecoder(gate)
    s = scheduler(d, max_batch=1, max_queue=1, wait=0.0).start()
    first, second = request(1), request(2)
    s.submit(first)
    time.sleep(0.1)  # admitted: its step waits on the gate
    s.submit(second)
    with pytest.raises(QueueFull):
        s.submit(request(3))
    gate.set()
    wait_all([first, second])
    s.stop()
    with pytest.raises(ShuttingDown):
        s.submit(request(4))


def test_stop_finishes_what_was_accepted():
    d = FakeDecoder()
    s = scheduler(d, max_batch=2, wait=0.0).start()
    rs = [request(i, windows=2) for i in range(3)]
    for r in rs:
        s.submit(r)
    s.stop()
    assert all(r.future.done() and r.job.done and r.job.error is None for r in rs)


def test_a_cancelled_request_stops_at_the_next_window_and_a_failed_step_fails_only_its_batch():
    gate = threading.Event()
    d = FakeDecoder(gate, fail_on="bad")
    s = scheduler(d, max_batch=1, wait=0.0).start()
    slow = request("slow", windows=5)
    s.submit(slow)
    time.sleep(0.1)
    slow.cancel()
    gate.set()
    assert slow.future.result(timeout=10).error == CANCELLED
    assert d.steps == [["slow"]]
    bad, good = request("bad"), request("good")
    s.submit(bad)
    s.submit(good)
    with pytest.raises(RuntimeError, match="boom"):
        bad.future.result(timeout=10)
    assert good.future.result(timeout=10).error is None
    s.stop()
