"""A preallocated key/value cache: self-attention K/V per layer and position, cross-attention K/V once
per utterance. Rows that skip a decoder attention branch never write (or read) their slice of it.

The cache owns its writes: positions are always a tensor on the device (the prompt's are an arange),
so that one code path serves the prompt, an eager step and a step captured in a CUDA graph, whose
position advances on the device. The cache keeps no length; whoever decodes tracks the positions.

Each layer owns its tensors (a list, not one stacked tensor), so that writing one layer's slice does
not bump the autograd version of tensors that another layer saved for its backward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class KVCache:
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
        sources: int | None = None,
    ):
        """`sources`: how many utterances' cross K/V it holds, when rows share them (`SharedSources`);
        by default one per row."""

        def zeros(rows: int, length: int) -> list[Tensor]:
            return [
                torch.zeros(rows, n_heads, length, head_dim, device=device, dtype=dtype)
                for _ in range(n_layers)
            ]

        self.self_k, self.self_v = zeros(batch, max_len), zeros(batch, max_len)
        sources = batch if sources is None else sources
        self.cross_k, self.cross_v = zeros(sources, source_len), zeros(sources, source_len)
        self.max_len = max_len
        self.shared: SharedSources | None = None  # set when rows read the K/V of a shared utterance

    def write(self, layer: int, rows: Tensor | None, positions: Tensor, k: Tensor, v: Tensor) -> None:
        """Self-attention K/V [rows, heads, T, head_dim] at `positions` [T] of `rows` (None: every row)."""
        for cache, new in ((self.self_k[layer], k), (self.self_v[layer], v)):
            if rows is None:
                cache.index_copy_(2, positions, new)
            else:
                heads = torch.arange(new.shape[1], device=new.device)
                cache.index_put_((rows[:, None, None], heads[None, :, None], positions[None, None, :]), new)

    def read(self, layer: int, rows: Tensor | None, length: int | None = None) -> tuple[Tensor, Tensor]:
        """Self-attention K/V of `rows`: the first `length` positions, or all of them (fixed shape)."""
        k, v = self.self_k[layer], self.self_v[layer]
        if length is not None:
            k, v = k[:, :, :length], v[:, :, :length]
        return (k, v) if rows is None else (k[rows], v[rows])

    def write_cross(self, layer: int, rows: Tensor | None, k: Tensor, v: Tensor) -> None:
        """Cross-attention K/V of `rows`, in place (a captured step keeps reading the same buffers)."""
        for cache, new in ((self.cross_k[layer], k), (self.cross_v[layer], v)):
            if rows is None:
                cache.copy_(new)
            else:
                cache[rows] = new

    def read_cross(self, layer: int, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        k, v = self.cross_k[layer], self.cross_v[layer]
        return (k, v) if rows is None else (k[rows], v[rows])

    def cross_attention(self, layer: int, rows: Tensor | None, q: Tensor, scale: float) -> Tensor:
        """Attention of queries [rows, heads, T, head_dim] over their rows' cross K/V."""
        k, v = self.read_cross(layer, rows)
        if self.shared is not None and rows is None:
            return self.shared.attend(q, k, v, scale)
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    def reorder(self, index: Tensor) -> None:
        """Row r continues from row `index[r]`'s self-attention history (beam search); cross K/V is the
        same for a row's beams, which stay within their row's block."""
        for buffers in (self.self_k, self.self_v):
            for layer_kv in buffers:
                layer_kv.copy_(layer_kv.index_select(0, index))


class SharedSources:
    """Rows that share an utterance's cross-attention K/V (training feeds a pseudo-label and a reference
    per utterance): row r reads utterance `utterance[r]`. Each utterance's rows are stacked along the
    query axis of one attention call, so its K/V are never copied per row (nor their gradients summed
    back): cross-attention has no mask, and a query attends alone whatever rides with it."""

    def __init__(self, utterance: Tensor, n_utterances: int):
        onehot = F.one_hot(utterance, n_utterances)
        self.utterance = utterance
        self.slot = (onehot.cumsum(0) * onehot).sum(1) - 1  # the row's place among its utterance's rows
        self.depth = int(onehot.sum(0).max())  # rows of the most shared utterance (one host sync)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        _, heads, t, d = q.shape
        n = k.shape[0]
        stacked = q.new_zeros(n, self.depth, heads, t, d).index_put((self.utterance, self.slot), q)
        stacked = stacked.permute(0, 2, 1, 3, 4).reshape(n, heads, self.depth * t, d)
        out = F.scaled_dot_product_attention(stacked, k, v, scale=scale)
        return out.view(n, heads, self.depth, t, d).permute(0, 2, 1, 3, 4)[self.utterance, self.slot]
