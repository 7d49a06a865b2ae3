"""Decoding steps over a static KV cache, one fixed mask per row: what greedy and beam search call.

`EagerSteps` runs `GatedWhisper.decode` directly (any device, any mix of masks: rows that share a
branch are gathered). `ctxprune.runtime.cuda_graphs.GraphedSteps` has the same interface and replays
a captured step instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.kv_cache import StaticKVCache


class EagerSteps:
    """Prefill cross K/V and the prompt, then one token per row per step; `reorder` serves beam search."""

    def __init__(self, gw: GatedWhisper, encoder_out: Tensor, gates: Gates, max_len: int):
        self.gw, self.gates = gw, gates
        self.cache: StaticKVCache = gw.new_cache(encoder_out.shape[0], max_len)
        gw.prefill_cross(encoder_out, self.cache, gates)

    def prompt(self, prompts: Tensor) -> Tensor:
        """Logits after the prompt [batch, vocab]."""
        return self.gw.decode(prompts, self.cache, self.gates)[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """Logits after one more token per row (`tokens` is [batch])."""
        return self.gw.decode(tokens[:, None], self.cache, self.gates)[:, -1]

    def reorder(self, index: Tensor) -> None:
        """Row r continues from row `index[r]`'s self-attention history (beam search)."""
        reorder_self_attention(self.cache, index)


def reorder_self_attention(cache: StaticKVCache, index: Tensor) -> None:
    """Gather every layer's self-attention K/V by row, in place (cross K/V is the same for a row's
    beams, which stay within their row's block)."""
    for buffers in (cache.self_k, cache.self_v):
        for layer_kv in buffers:
            layer_kv.copy_(layer_kv.index_select(0, index))


def repeat_rows(x: Tensor, times: int) -> Tensor:
    """[b, ...] -> [b * times, ...], each row repeated `times` times in a block."""
    return torch.repeat_interleave(x, times, dim=0)
