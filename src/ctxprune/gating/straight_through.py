"""Binary gates from logits: straight-through Gumbel-sigmoid for training, a threshold at inference.

Training draws logistic noise (the difference of two Gumbels, i.e. a 2-class Gumbel-softmax), so the
hard gate `1[logit + noise > 0]` is 1 with probability sigmoid(logit). The forward pass uses that hard
0/1 value; the backward pass uses the gradient of sigmoid((logit + noise) / tau).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


class _HardForwardSoftBackward(torch.autograd.Function):
    """Exactly the 0/1 `hard` in the forward pass; the identity gradient to `soft` in the backward."""

    @staticmethod
    def forward(ctx, soft: Tensor, hard: Tensor) -> Tensor:
        return hard.to(soft.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through_gates(
    logits: Tensor, tau: float, generator: torch.Generator | None = None, noise: float = 1.0
) -> Tensor:
    """`noise` scales the logistic noise: 1 samples keep ~ Bernoulli(sigmoid(logit)); 0 is the
    deterministic inference mask (annealed to 0 so that training ends on the masks inference uses).
    The hard value compares the noisy logit with 0, as `inference_gates` does: thresholding the
    sigmoid instead rounds a logit within ~1e-8 of 0 to 0.5 and closes a gate inference keeps
    (calibration leaves logits just past 0)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-6, 1 - 1e-6)
    noisy = logits + noise * (torch.log(u) - torch.log1p(-u))
    return _HardForwardSoftBackward.apply(torch.sigmoid(noisy / tau), noisy > 0)


def inference_gates(logits: Tensor) -> Tensor:
    """Deterministic: keep a branch exactly when its logit is positive."""
    return logits > 0


@dataclass(frozen=True)
class TemperatureSchedule:
    """Exponential annealing from `start` to `end` over `steps`, then constant."""

    start: float = 1.0
    end: float = 0.1
    steps: int = 1000

    def __call__(self, step: int) -> float:
        if step >= self.steps:
            return self.end
        return self.start * math.exp(math.log(self.end / self.start) * step / self.steps)
