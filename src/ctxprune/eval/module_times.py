"""How long each gated branch takes, measured with torch.profiler on a dense run: the ideal saving of a
mask is the sum of its skipped branches' times.

`GatedWhisper.label_branches` puts a profiler range around every branch (and around each layer's
cross-attention K/V prefill). On CUDA a branch's time is the device time of the kernels it launched,
which is what a captured graph replays. On the CPU it is the branch's CPU time; the profiler slows
every op, so CPU times are reported with the profiled run's wall time and used as shares of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from ctxprune.models.whisper import GatedWhisper

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
