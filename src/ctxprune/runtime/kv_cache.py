"""A preallocated key/value cache: self-attention K/V per layer and position, cross-attention K/V once
per utterance. Rows that skip a decoder attention branch never write (or read) their slice of it.

Each layer owns its tensors (a list, not one stacked tensor), so that writing one layer's slice does
not bump the autograd version of tensors that another layer saved for its backward pass."""

from __future__ import annotations

import torch


class StaticKVCache:
    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        source_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        def zeros(length: int) -> list[torch.Tensor]:
            return [
                torch.zeros(batch, n_heads, length, head_dim, device=device, dtype=dtype)
                for _ in range(n_layers)
            ]

        self.self_k, self.self_v = zeros(max_len), zeros(max_len)
        self.cross_k, self.cross_v = zeros(source_len), zeros(source_len)
        self.length = 0
        self.max_len = max_len

    def reserve(self, n_new: int) -> tuple[int, int]:
        """Positions [start, end) for the next `n_new` tokens."""
        start = self.length
        if start + n_new > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {start + n_new} requested")
        return start, start + n_new
