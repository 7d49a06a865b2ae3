"""The random baseline: LayerDrop-style masks that ignore the context.

Each gate whose name starts with `prefix` is off with probability `rate`, drawn independently per
utterance from a seeded generator, so that a baseline run is reproducible and several seeds give its
spread. The other gates stay on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.gating.space import GateSpace


class RandomGates:
    def __init__(self, space: GateSpace, rate: float, prefix: str, seed: int = 0):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"random gate rate must be in [0, 1], got {rate}")
        self.space, self.rate, self.prefix, self.seed = space, rate, prefix, seed
        self.index = torch.tensor(space.indices(prefix), dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch: int) -> Tensor:
        """Masks [batch, n_gates], True = the branch runs."""
        mask = torch.ones(batch, len(self.space), dtype=torch.bool)
        off = torch.rand(batch, len(self.index), generator=self.generator) < self.rate
        mask[:, self.index] = ~off
        return mask
