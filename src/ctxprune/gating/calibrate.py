"""Post-training calibration: per-gate logit shifts that land the inference sparsity on the target.

Training pulls the *expected* sparsity of noisy gates toward the target; the deterministic masks used at
inference can end some distance away. Gates of very different cost make it worse: in Whisper's decoder
each cross-attention (its K/V projections run over all 1500 encoder frames) weighs about 0.15 of the
FLOPs and a feed-forward about 0.01, so sparsity moves in steps of 0.15 as cross-attentions flip.

Two bisections on held-out (dev) rows, never on test. First one shift for every gate: it keeps the
learned order of the gates and only moves the cut. If that cannot come within `tolerance`, the cut is
set just below the target and a second shift, applied only to gates lighter than the remaining gap,
fills it, again in their learned order. Sparsity only falls as a shift rises, which is what makes
bisection valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Calibration:
    shift: list[float]  # per gate, added to its logit
    sparsity_before: float  # with no shift, as trained
    sparsity_after: float


def _bisect(sparsity_at: Callable[[float], float], target: float, span: float, iterations: int):
    """(lo, hi) with sparsity_at(lo) >= target > sparsity_at(hi), unless the target is out of reach."""
    lo, hi = -span, span
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if sparsity_at(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo, hi


def calibrate_shift(
    sparsity_at: Callable[[Tensor], float],
    weights: Tensor,
    target: float,
    tolerance: float = 0.02,
    span: float = 64.0,
    iterations: int = 40,
) -> Calibration:
    """Per-gate shifts whose sparsity is closest to `target` (see the module docstring).
    `sparsity_at(shift)` gets a [n_gates] shift vector; `weights` are the gates' shares of the budget
    (0 for gates outside the calibrated stack)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target sparsity must be in [0, 1], got {target}")
    weights = weights.float()
    zero = torch.zeros_like(weights)
    tried: list[tuple[Tensor, float]] = [(zero, sparsity_at(zero))]

    def at(shift: Tensor) -> float:
        tried.append((shift, sparsity_at(shift)))
        return tried[-1][1]

    _, hi = _bisect(lambda s: at(zero + s), target, span, iterations)
    light = (weights > 0) & (weights <= target - sparsity_at(zero + hi))
    if min(abs(s - target) for _, s in tried) > tolerance and light.any():
        _bisect(lambda e: at(zero + hi + light * e), target, span, iterations)
    best, best_sparsity = min(tried, key=lambda t: (abs(t[1] - target), float(t[0].abs().sum())))
    return Calibration(best.tolist(), tried[0][1], best_sparsity)
