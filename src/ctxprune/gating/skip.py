"""Run a residual branch only where it is kept: x + f(x) for kept rows, x for the rest.

Inference uses `RowSelection`: when every row keeps the branch the plain path runs with no copies;
when none does nothing runs; otherwise the kept rows are gathered, the branch runs on them alone,
and its output is scattered back into the residual. Training uses a float weight per row instead
(the straight-through gate value, 0 or 1 in the forward pass) so that gradients reach the gates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# A branch gets the rows it runs on (a [B', ...] tensor) and their batch indices (None: all rows).
Branch = Callable[[Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class RowSelection:
    """The batch rows that run one branch. `index is None` means all rows."""

    index: Tensor | None
    count: int

    @property
    def everyone(self) -> bool:
        return self.index is None

    @property
    def nobody(self) -> bool:
        return self.count == 0


Keep = RowSelection | Tensor | None


def run_branch(x: Tensor, branch: Branch, keep: Keep) -> Tensor:
    """Apply `x + branch(x)` on the rows that keep the branch; see the module docstring."""
    if keep is None:
        return x + branch(x, None)
    if isinstance(keep, Tensor):
        weight = keep.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return x + weight * branch(x, None)
    if keep.everyone:
        return x + branch(x, None)
    if keep.nobody:
        return x
    rows = keep.index
    return x.index_add(0, rows, branch(x.index_select(0, rows), rows))


class MaskPlan:
    """Per-branch row selections for a batch of hard masks, built once per batch (the mask is fixed
    for the whole utterance), so decoding steps never sync with the host to decide what to run."""

    def __init__(self, mask: Tensor, names: list[str], device: torch.device | str):
        if mask.dim() != 2 or mask.shape[1] != len(names):
            raise ValueError(f"mask must be [batch, {len(names)}], got {tuple(mask.shape)}")
        mask = mask.detach().to("cpu", torch.bool)
        self.mask = mask
        self.names = list(names)
        batch = mask.shape[0]
        self._keep: dict[str, RowSelection] = {}
        for j, name in enumerate(names):
            rows = mask[:, j].nonzero().flatten()
            if len(rows) == batch:
                self._keep[name] = RowSelection(None, batch)
            else:
                self._keep[name] = RowSelection(rows.to(device), len(rows))

    def keep(self, name: str) -> RowSelection:
        return self._keep[name]


class SoftGates:
    """Training-time gates: [batch, n_gates] straight-through values (0/1 forward, soft backward)."""

    def __init__(self, values: Tensor, names: list[str]):
        self.values = values
        self._index = {n: j for j, n in enumerate(names)}

    def keep(self, name: str) -> Tensor:
        return self.values[:, self._index[name]]


Gates = MaskPlan | SoftGates | None


def keep_of(gates: Gates, name: str) -> Keep:
    return None if gates is None else gates.keep(name)
