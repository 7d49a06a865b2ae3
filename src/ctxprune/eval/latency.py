"""`ctxprune bench`: decoding latency of the dense model against gate sets, on the same inputs.

Variants are interleaved within each repeat (in a rotating order, so none always runs first or
last), after warm-up rounds that are not recorded. Batch 1 decodes a fixed mix of utterances one at a
time (time per utterance); the batched case decodes one mixed-context batch (rows from every task and
language). Medians and quartiles are reported, with the generated token counts, since a pruned model
may stop earlier or later than the dense one.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import Example, read_manifest
from ctxprune.errors import CtxpruneError
from ctxprune.eval.records import BenchRecord, BenchResult
from ctxprune.eval.suite import Candidate, device_name
from ctxprune.runtime.decoding import GREEDY, DecodeOptions
from ctxprune.stack import Stack, StackSpec, load_stack


def mixed_rows(examples: list[Example], n: int) -> list[Example]:
    """`n` rows taken round-robin over the (task, language) groups, in a fixed order."""
    groups: dict[tuple[str, str], list[Example]] = {}
    for e in examples:
        groups.setdefault((e.task, e.language), []).append(e)
    order = [rows for _, rows in sorted(groups.items())]
    out = []
    for i in range(max(len(r) for r in order)):
        out += [rows[i] for rows in order if i < len(rows)]
    return out[:n]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    variants: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: str,
    on_step: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Milliseconds per call of each variant over `repeats` rounds after `warmup` rounds, in a rotating
    order; and each variant's last output."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, object] = {}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            start = time.perf_counter()
            outputs[name] = variants[name]()
            _sync(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
            if on_step:
                on_step()
    return times, outputs


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def dense_reference(candidates: list[Candidate]) -> str | None:
    """The candidate `reduction_vs_dense` is measured against: the first of kind dense, wherever it stands.
    None without one; then no reduction is recorded rather than one against some gate set."""
    return next((c.name for c in candidates if c.kind == "dense"), None)


def bench_latency(
    candidates: list[Candidate],
    data: Path,
    spec: StackSpec,
    split: str = "test",
    batch_sizes: tuple[int, ...] = (1, 16),
    batch1_rows: int = 4,
    repeats: int = 10,
    warmup: int = 2,
    options: DecodeOptions = GREEDY,
    on_step: Callable[[], None] | None = None,
) -> BenchRecord:
    """Time every candidate on the same inputs at each batch size (`spec` without its gates: each
    candidate brings its own), interleaved; returns the record (`kind: bench`)."""
    if repeats < 1:
        raise CtxpruneError("--repeats must be at least 1")
    examples = read_manifest(data, split)
    if not examples:
        raise CtxpruneError(f"{data}: the {split} split has no rows")
    stacks: dict[str, Stack] = {c.name: load_stack(spec.with_gates(c.gates)) for c in candidates}
    device, dtype = spec.device, spec.dtype
    results = []
    for batch in batch_sizes:
        rows = mixed_rows(examples, batch1_rows if batch == 1 else batch)
        chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        first = next(iter(stacks.values()))
        inputs = []
        for chunk in chunks:
            feats, frames = features_for(
                [load_audio(data / e.audio) for e in chunk], first.gated.config.num_mel_bins
            )
            inputs.append(
                (feats.to(device, dtype), frames, [e.task for e in chunk], [e.language for e in chunk])
            )

        def run_all(stack: Stack, inputs=inputs):
            return [stack.run(f, fr, t, lang, options=options) for f, fr, t, lang in inputs]

        variants = {name: (lambda s=stacks[name]: run_all(s)) for name in stacks}
        times, outputs = interleaved(variants, repeats, warmup, device, on_step)
        if batch == 1:
            times = {name: [t / len(rows) for t in ts] for name, ts in times.items()}
        tokens = {name: sum(len(row) for o in outs for row in o.tokens) for name, outs in outputs.items()}
        reference = dense_reference(candidates)
        dense_median = statistics.median(times[reference]) if reference is not None else None
        for c in candidates:
            t = times[c.name]
            p25, p75 = _quartiles(t)
            median = statistics.median(t)
            per_call = median if batch > 1 else median * len(rows)
            results.append(
                BenchResult(
                    name=c.name,
                    kind=c.kind,
                    batch=batch,
                    rows=len(rows),
                    median_ms=median,
                    p25_ms=p25,
                    p75_ms=p75,
                    min_ms=min(t),
                    max_ms=max(t),
                    repeats=repeats,
                    tokens=tokens[c.name],
                    tokens_per_s=tokens[c.name] / (per_call / 1000),
                    reduction_vs_dense=None if dense_median is None else 1 - median / dense_median,
                )
            )
    cuda = device.startswith("cuda")
    return BenchRecord(
        device="cuda" if cuda else "cpu",
        device_name=device_name(device),
        threads=torch.get_num_threads(),
        dtype="int8 (dynamic)" if spec.int8 else str(dtype).removeprefix("torch."),
        split=split,
        reference=dense_reference(candidates),
        loop_guard=options.loop_guard,
        gate_set_predictors={c.name: c.predictor for c in candidates if c.predictor} or None,
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.platform(),
        },
        results=results,
    )
