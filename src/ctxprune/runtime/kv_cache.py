"""A preallocated key/value cache: self-attention K/V per layer and position, cross-attention K/V once
per utterance. Rows that skip a decoder attention branch never write (or read) their slice of it."""

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
        self.self_k = torch.zeros(n_layers, batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.self_v = torch.zeros_like(self.self_k)
        self.cross_k = torch.zeros(n_layers, batch, n_heads, source_len, head_dim, device=device, dtype=dtype)
        self.cross_v = torch.zeros_like(self.cross_k)
        self.length = 0
        self.max_len = max_len

    def reserve(self, n_new: int) -> tuple[int, int]:
        """Positions [start, end) for the next `n_new` tokens."""
        start = self.length
        if start + n_new > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {start + n_new} requested")
        return start, start + n_new
