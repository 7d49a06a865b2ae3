"""The sparsity objective `alpha * (s - s_target)^2`, where s is the expected fraction skipped.

s is computed from keep probabilities (sigmoid of the logits), per group of gates (e.g. encoder and
decoder with their own targets, or all gates sharing one), either counting modules (the paper's way)
weighting each gate by its FLOPs so that 0.5 means half the gated compute, or by its measured time on
the target device so that 0.5 means half the gated time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ctxprune.gating.space import GateSpace


@dataclass(frozen=True)
class SparsityTarget:
    prefix: str  # gates whose names start with this ("" = all gates, "enc." = encoder, "dec." = decoder)
    target: float

    def __post_init__(self):
        if not 0.0 <= self.target <= 1.0:
            raise ValueError(f"sparsity target must be in [0, 1], got {self.target}")


def gate_weights(space: GateSpace, by: str) -> Tensor:
    if by == "count":
        return torch.ones(len(space))
    if by in ("flops", "latency"):
        return torch.tensor(space.weights(by), dtype=torch.float64).float()
    raise ValueError(f"sparsity-by must be 'count', 'flops' or 'latency', got {by!r}")


def skipped_fraction(keep: Tensor, weights: Tensor, index: list[int]) -> Tensor:
    """Weighted fraction of gates in `index` that are skipped, per row. `keep` is [batch, gates] in [0, 1]."""
    w = weights.to(keep.device)[index]
    return ((1 - keep[:, index]) * w).sum(-1) / w.sum()


def budget_means(s: Tensor, budgets: Sequence[str] | None) -> list[Tensor]:
    """The mean of per-row `s` over the whole batch (budgets None), or over each budget's rows."""
    if budgets is None:
        return [s.mean()]
    return [s[[i for i, b in enumerate(budgets) if b == key]].mean() for key in dict.fromkeys(budgets)]


def sparsity_loss(
    keep_prob: Tensor,
    space: GateSpace,
    targets: list[SparsityTarget],
    by: str = "flops",
    alpha: float = 1.0,
    budgets: Sequence[str] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """`alpha * sum_groups (mean_batch s_group - target)^2`, and the achieved s per group for logging.

    With `budgets` (one key per row, e.g. its task) each key's rows meet the target on their own, and
    the squared gaps are averaged over the keys: a context predictor can no longer buy sparsity on one
    task with quality on another. The logged s is the batch mean either way."""
    weights = gate_weights(space, by)
    loss = keep_prob.new_zeros(())
    achieved = {}
    for t in targets:
        index = space.indices(t.prefix)
        if not index:
            raise ValueError(f"no gate name starts with {t.prefix!r}")
        s = skipped_fraction(keep_prob, weights, index)
        gaps = [(m - t.target) ** 2 for m in budget_means(s, budgets)]
        loss = loss + torch.stack(gaps).mean()
        achieved[t.prefix or "all"] = float(s.mean().detach())
    return alpha * loss, achieved
