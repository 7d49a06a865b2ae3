"""Post-training calibration: per-gate logit shifts that bring the inference sparsity within a window
around the target, changing the trained masks as little as possible.

Training pulls the *expected* sparsity of noisy gates toward the target; the deterministic masks used at
inference can end some distance away. Gates of very different cost make it worse: in Whisper's decoder
each cross-attention (its K/V projections run over all 1500 encoder frames) weighs about 0.15 of the
FLOPs and a feed-forward about 0.01, so sparsity moves in steps of 0.15 as cross-attentions flip.

Two bisections on held-out (dev) rows, never on test. First one shift shared by every gate, the smallest
that enters the window: it keeps the learned order of the gates and moves the cut only as far as needed.
If the next gate to flip is too heavy and jumps over the window, the cut stays just below it and a
second shift, applied only to gates light enough to fit, fills the gap in their learned order. Sparsity
only falls as a shift rises, which is what makes bisection valid. The masks change, so the weights
trained with them (a gate set's own LoRA) may need a short re-tune afterwards (`train gates --start-from`).
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


def _bisect(holds: Callable[[float], bool], span: float, iterations: int) -> tuple[float, float]:
    """(lo, hi), close together, with holds(lo) and not holds(hi); `holds` is true for low shifts only."""
    lo, hi = -span, span
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if holds(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def calibrate_shift(
    sparsity_at: Callable[[Tensor], float],
    weights: Tensor,
    target: float,
    tolerance: float = 0.04,
    span: float = 64.0,
    iterations: int = 40,
) -> Calibration:
    """Per-gate shifts that bring the sparsity within `tolerance` of `target` with the least change (see
    the module docstring), else as close as they can. `sparsity_at(shift)` gets a [n_gates] shift vector;
    `weights` are the gates' shares of the budget (0 for gates outside the calibrated stack)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target sparsity must be in [0, 1], got {target}")
    low, high = target - tolerance, target + tolerance
    zero = torch.zeros_like(weights, dtype=torch.float32)
    tried: dict[tuple[float, ...], tuple[Tensor, float]] = {}  # each shift's sparsity, measured once

    def at(shift: Tensor) -> float:
        key = tuple(shift.tolist())
        if key not in tried:
            tried[key] = (shift, sparsity_at(shift))
        return tried[key][1]

    def result() -> Calibration:
        inside = [t for t in tried.values() if low <= t[1] <= high]
        pool = inside or list(tried.values())  # least change inside the window, else the closest
        best = min(pool, key=lambda t: (0.0 if inside else abs(t[1] - target), float(t[0].abs().sum())))
        return Calibration(best[0].tolist(), before, best[1])

    before = at(zero)
    if low <= before <= high:
        return result()
    if before < low:  # too few gates off: lower every logit just enough
        first, below = _bisect(lambda s: at(zero + s) >= low, span, iterations)
    else:  # too many off: raise every logit just enough (if that overshoots, it is the base below)
        _, first = _bisect(lambda s: at(zero + s) > high, span, iterations)
        below = first
    if low <= at(zero + first) <= high:
        return result()
    base = zero + below  # the next gate jumps over the window: fill it with gates that fit
    light = (weights > 0) & (weights <= high - at(base))
    if light.any():
        _bisect(lambda e: at(base + light * e) >= low, span, iterations)
    return result()
