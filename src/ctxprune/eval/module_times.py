"""How long each gated branch takes, measured with torch.profiler on a dense run: the ideal saving of a
mask is the sum of its skipped branches' times.

`GatedWhisper.label_branches` puts a profiler range around every branch (and around each layer's
cross-attention K/V prefill). On CUDA a branch's time is the device time of the kernels it launched,
which is what a captured graph replays. On the CPU it is the branch's CPU time; the profiler slows
every op, so CPU times are reported with the profiled run's wall time and used as shares of it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ctxprune.errors import CtxpruneError
from ctxprune.gating.space import GateCost
from ctxprune.models.whisper import GatedWhisper
from ctxprune.paths import write_json_atomic

LABEL = "gate:"


@dataclass
class BranchTimes:
    ms: dict[str, float]  # per gate name, summed over the profiled run
    profiled_wall_ms: float
    device: str  # "cuda": device (kernel) time; "cpu": CPU time

    def saving_ms(self, skip_share: dict[str, float], dense_ms: float) -> float:
        """The ideal saving against an unprofiled dense run of `dense_ms`, when gate g is skipped by a
        share `skip_share[g]` of the rows: kernel time on CUDA, share of the wall time on the CPU."""
        skipped = sum(self.ms.get(g, 0.0) * share for g, share in skip_share.items())
        return skipped if self.device == "cuda" else skipped / self.profiled_wall_ms * dense_ms


def branch_times(gw: GatedWhisper, run: Callable[[], object]) -> BranchTimes:
    """Profile one call of `run` (a dense, eager decode on `gw`) and sum each branch's time."""
    cuda = gw.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    gw.label_branches = True
    try:
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            wall = (time.perf_counter() - start) * 1000
    finally:
        gw.label_branches = False
    ms: dict[str, float] = {}
    for event in prof.events():
        # CPU-side ranges only (CUDA adds a device-side copy of each range with the same name)
        if event.name.startswith(LABEL) and event.device_type == torch.autograd.DeviceType.CPU:
            us = event.device_time_total if cuda else event.cpu_time_total
            name = event.name[len(LABEL) :]
            ms[name] = ms.get(name, 0.0) + us / 1000
    return BranchTimes(ms, wall, "cuda" if cuda else "cpu")


def gate_time_costs(
    gw: GatedWhisper, prompt: list[int], lengths: tuple[int, ...] = (8, 32, 96), repeats: int = 3
) -> tuple[GateCost, ...]:
    """Each gate's time at batch 1 on `gw`'s device, in ms, split as the FLOP costs are: per utterance
    (an encoder branch, a cross-attention's K/V), per token and per token and cached position.

    Dense eager decodes of each length in `lengths` (the prompt at once, then one token at a time) are
    profiled `repeats` times; the medians are fitted by least squares to those three parts (clamped at
    0), against the same decode-length formula as the FLOP costs (`GateCost.decode`)."""
    c = gw.config
    p = next(gw.model.parameters())
    features = torch.zeros(1, c.num_mel_bins, 2 * c.max_source_positions, device=p.device, dtype=p.dtype)
    with torch.inference_mode():
        encoder_out = gw.encode(features)
        ids = torch.tensor([prompt], device=p.device)

        def decode(new_tokens: int) -> None:
            n = len(prompt)
            cache = gw.new_cache(1, n + new_tokens)
            gw.prefill_cross(encoder_out, cache)
            logits = gw.decode(ids, torch.arange(n, device=p.device), cache, length=n)
            for t in range(new_tokens - 1):
                token = logits[:, -1:].argmax(-1)
                position = torch.tensor([n + t], device=p.device)
                logits = gw.decode(token, position, cache, length=n + t + 1)

        def median_ms(run: Callable[[], object]) -> dict[str, float]:
            runs = [branch_times(gw, run) for _ in range(repeats + 1)][1:]  # the first warms up
            return {g: statistics.median(r.ms.get(g, 0.0) for r in runs) for g in gw.gate_names}

        encoder = median_ms(lambda: gw.encode(features))
        decoder = {n: median_ms(lambda n=n: decode(n)) for n in lengths}
    basis = [[GateCost(*unit).decode(len(prompt), n) for unit in _UNITS] for n in lengths]
    a = torch.tensor(basis, dtype=torch.float64)
    out = []
    for g in gw.gate_names:
        if g.startswith("enc."):
            out.append(GateCost(per_utterance=encoder[g]))
            continue
        b = torch.tensor([[decoder[n][g]] for n in lengths], dtype=torch.float64)
        fit = torch.linalg.lstsq(a, b).solution.flatten().clamp_min(0).tolist()
        out.append(GateCost(*fit))
    return tuple(out)


def write_gate_times(path: Path, names: list[str], times: tuple[GateCost, ...], device: str) -> None:
    """Branch times as JSON, by gate name, with the device they were measured on."""
    gates = {n: asdict(t) for n, t in zip(names, times, strict=True)}
    write_json_atomic(path, {"device": device, "gates": gates})


def read_gate_times(path: Path, names: list[str], device: str | None) -> tuple[tuple[GateCost, ...], str]:
    """Branch times written by `write_gate_times` and the device that measured them; refused if measured
    elsewhere (unless `device` is None) or for other gates."""
    record = json.loads(path.read_text())
    if device is not None and record["device"] != device:
        raise CtxpruneError(f"{path}: branch times measured on {record['device']}, not on this {device}")
    if sorted(record["gates"]) != sorted(names):
        raise CtxpruneError(f"{path}: branch times for other gates than this model's; delete it to measure")
    return tuple(GateCost(**record["gates"][n]) for n in names), record["device"]


_UNITS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # per utterance, per token, per position
