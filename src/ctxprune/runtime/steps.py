"""Decoding steps over a KV cache, one fixed mask per row: what greedy and beam search call.

`Steps` is the interface; `EagerSteps` runs `GatedWhisper.decode` directly (any device, any mix of
masks: rows that share a branch are gathered) and tracks the position on the host, so that attention
reads only the cached prefix. `cuda_graphs.GraphedSteps` has the same interface over fixed shapes and
replays captured graphs.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.kv_cache import KVCache
from ctxprune.models.whisper import GatedWhisper


class Steps(Protocol):
    """Prefill cross K/V and the prompt, then one token per row per step; `reorder` serves beam search."""

    prompt_logits: Tensor  # [batch, prompt length, vocab], set by `prompt` (the no-speech probability)

    def prompt(self, prompts: Tensor) -> Tensor:
        """Logits after the prompt [batch, vocab]."""
        ...

    def step(self, tokens: Tensor) -> Tensor:
        """Logits after one more token per row (`tokens` is [batch])."""
        ...

    def reorder(self, index: Tensor) -> None:
        """Row r continues from row `index[r]`'s self-attention history (beam search)."""
        ...


class EagerSteps:
    """`Steps` run eagerly; the next position is known on the host."""

    def __init__(self, gw: GatedWhisper, encoder_out: Tensor, gates: Gates, max_len: int):
        self.gw, self.gates = gw, gates
        self.cache: KVCache = gw.new_cache(encoder_out.shape[0], max_len)
        self.length = 0  # positions decoded so far
        gw.prefill_cross(encoder_out, self.cache, gates)

    def _decode(self, tokens: Tensor) -> Tensor:
        start, end = self.length, self.length + tokens.shape[1]
        if end > self.cache.max_len:
            raise ValueError(f"KV cache holds {self.cache.max_len} positions; {end} requested")
        positions = torch.arange(start, end, device=tokens.device)
        logits = self.gw.decode(tokens, positions, self.cache, self.gates, length=end)
        self.length = end
        return logits

    def prompt(self, prompts: Tensor) -> Tensor:
        self.prompt_logits = self._decode(prompts)
        return self.prompt_logits[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        return self._decode(tokens[:, None])[:, -1]

    def reorder(self, index: Tensor) -> None:
        self.cache.reorder(index)


def repeat_rows(x: Tensor, times: int) -> Tensor:
    """[b, ...] -> [b * times, ...], each row repeated `times` times in a block."""
    return torch.repeat_interleave(x, times, dim=0)
