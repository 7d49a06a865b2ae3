"""What `/metrics` exports, in Prometheus' text format (prometheus_client): queue depth, batch sizes,
mask groups per batch, latency histograms and the FLOPs the gates skipped. One registry per server, so
that several servers (tests, Ray replicas) do not share counters."""

from __future__ import annotations

import collections

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ctxprune.longform.decoder import Window

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class ServerMetrics:
    def __init__(self, queue_depth, in_flight):
        r = self.registry = CollectorRegistry()
        Gauge("ctxprune_queue_depth", "Requests waiting for a batch", registry=r).set_function(queue_depth)
        Gauge("ctxprune_requests_in_flight", "Requests being decoded", registry=r).set_function(in_flight)
        self.batch_windows = Histogram(
            "ctxprune_batch_windows", "30 s windows decoded together in one step", ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=r,
        )  # fmt: skip
        self.signature_groups = Histogram(
            "ctxprune_batch_signature_groups", "Distinct module masks in one decoding step", ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=r,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "ctxprune_step_seconds", "Time of one decoding step (encoder and decoder, with fallback)",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "ctxprune_request_seconds", "Time from a request's arrival to its answer", ["model", "endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "ctxprune_queue_wait_seconds", "Time a request waited for its first window", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "ctxprune_requests", "Answered requests by HTTP status", ["endpoint", "status"], registry=r
        )
        self.flops = Counter(
            "ctxprune_flops", "FLOPs of decoded windows: executed, and what dense would have run",
            ["model", "kind"], registry=r,
        )  # fmt: skip
        self.audio_seconds = Counter(
            "ctxprune_audio_seconds", "Seconds of audio transcribed", ["model"], registry=r
        )

    def step(self, model: str, windows: list[Window], seconds: float) -> None:
        self.batch_windows.labels(model).observe(len(windows))
        self.signature_groups.labels(model).observe(len({tuple(w.keep) for w in windows}))
        self.step_seconds.labels(model).observe(seconds)
        self.flops.labels(model, "executed").inc(sum(w.flops[0] for w in windows))
        self.flops.labels(model, "dense").inc(sum(w.flops[1] for w in windows))

    def summary(self) -> str:
        """One line for the end of a run: audio requests answered, by status, and the audio they held."""
        statuses: collections.Counter = collections.Counter()
        for sample in self.requests.collect()[0].samples:
            if sample.name.endswith("_total") and sample.labels["endpoint"].startswith("/v1/audio/"):
                statuses[sample.labels["status"]] += int(sample.value)
        audio = sum(s.value for s in self.audio_seconds.collect()[0].samples if s.name.endswith("_total"))
        by_status = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())) or "none"
        return (
            f"{sum(statuses.values())} audio requests answered ({by_status}), {audio / 60:.1f} min of audio"
        )

    def export(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
