"""CUDA-graph decoding steps: one captured step per (mask signature, batch size, cache length).

At batch 1 a Whisper-base decoding step is a few hundred small kernels; launching them from Python costs
far more than running them. A signature is one decoder mask shared by every row of the group, so the
captured step holds no gather or scatter: skipped branches are simply absent from the graph, and the
saving is the skipped kernels' own time. Buffers (token, position, KV cache, logits) are allocated
once per graph and reused by every utterance that shares its key.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.steps import reorder_self_attention


class GraphedSteps:
    """`EagerSteps`' interface; `step` replays a CUDA graph captured at its first call. With `pool=None`
    (CPU, tests) the same fixed-shape step runs eagerly instead."""

    def __init__(self, gw: GatedWhisper, gates: MaskPlan, batch: int, max_len: int, pool=None) -> None:
        self.gw, self.gates, self.pool = gw, gates, pool
        self.cache = gw.new_cache(batch, max_len)
        device = self.cache.self_k[0].device
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: Tensor | None = None

    def bind(self, encoder_out: Tensor) -> GraphedSteps:
        """Start an utterance: cross K/V into this graph's buffers."""
        self.gw.prefill_cross(encoder_out, self.cache, self.gates)
        self.cache.length = 0
        return self

    def prompt(self, prompts: Tensor) -> Tensor:
        logits = self.gw.decode(prompts, self.cache, self.gates)[:, -1]
        self.position.fill_(prompts.shape[1])
        return logits

    def step(self, tokens: Tensor) -> Tensor:
        """Logits [batch, vocab] after one more token; the tensor is overwritten by the next step."""
        self.token.copy_(tokens[:, None])
        if self.pool is None:
            return self._run()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits

    def reorder(self, index: Tensor) -> None:
        reorder_self_attention(self.cache, index)

    def _run(self) -> Tensor:
        logits = self.gw.decode_at(self.token, self.position, self.cache, self.gates)[:, -1]
        self.position.add_(1)
        return logits

    def _capture(self) -> None:
        # one warm-up on a side stream (as torch.cuda.graphs asks); it writes this position's K/V for the
        # real token, which the first replay writes again
        start = self.position.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.position.copy_(start)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=self.pool):
            self.logits = self._run()


class GraphPool:
    """Captured steps by (decoder signature, batch, cache length), least recently used dropped first."""

    def __init__(self, gw: GatedWhisper, capture: bool = True, max_graphs: int = 32) -> None:
        self.gw = gw
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, GraphedSteps] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self.keys_built = 0

    def steps(self, mask_row: list[bool], batch: int, max_len: int, encoder_out: Tensor) -> GraphedSteps:
        """Steps for `batch` rows that all share `mask_row`, bound to `encoder_out`."""
        key = (tuple(mask_row), batch, max_len, encoder_out.dtype)
        if key not in self._graphs:
            mask = torch.tensor([mask_row] * batch, dtype=torch.bool)
            plan = MaskPlan(mask, self.gw.gate_names, encoder_out.device)
            self._graphs[key] = GraphedSteps(self.gw, plan, batch, max_len, self._pool)
            self.keys_built += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return self._graphs[key].bind(encoder_out)
