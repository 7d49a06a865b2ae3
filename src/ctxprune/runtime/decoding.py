"""The runtime over a batch whose rows carry different masks: group rows by decoder signature, CUDA
graphs per group, the rare rest together on the row-gather path.

Masks follow the context (task, language), so a batch holds few distinct decoder masks. Each group runs
captured graphs (prefill and step) with no gather or scatter. When a batch holds more than `max_groups`
signatures, the rarest share one eager pass in which rows that keep a branch are gathered
(`gating.skip.run_branch`). The encoder runs as one graph when every row shares its early mask.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from ctxprune.errors import CtxpruneError
from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.beam import beam_search
from ctxprune.runtime.cuda_graphs import GraphPool
from ctxprune.runtime.greedy import MAX_NEW_TOKENS, StepLane, cache_length, greedy_lanes
from ctxprune.runtime.steps import EagerSteps, repeat_rows


@dataclass(frozen=True)
class DecodeOptions:
    beams: int = 1  # 1: greedy
    length_penalty: float = 1.0  # beam score: sum log p / length ** length_penalty (HF's default)
    max_new_tokens: int = MAX_NEW_TOKENS
    min_new_tokens: int = 0  # end-of-text suppressed before this many tokens (HF's min_new_tokens)
    cuda_graphs: bool = True  # on CUDA: a captured step per signature (off: the eager row-gather path)
    max_groups: int = 8  # signatures per batch that get their own graphs; rarer ones share a gather pass

    def __post_init__(self):
        if self.beams < 1:
            raise CtxpruneError(f"beams must be at least 1 (--beams), got {self.beams}")


GREEDY = DecodeOptions()


class BatchDecoder:
    """Greedy or beam decoding of a batch with a mask per row, grouped by decoder signature."""

    def __init__(self, gw: GatedWhisper, tokens: WhisperTokens, options: DecodeOptions | None = None):
        self.gw, self.tokens, self.options = gw, tokens, options or GREEDY
        self._pools: dict[bool, GraphPool] = {}
        self._lane_streams: list[torch.cuda.Stream] = []  # created once: creating them per batch costs
        self._decoder_gate = torch.tensor([n.startswith("dec.") for n in gw.gate_names])

    def static(self, device: torch.device, static_steps: bool | None) -> bool:
        """Fixed-shape (graph) path? By default on CUDA with `cuda_graphs` on."""
        if static_steps is None:
            return device.type == "cuda" and self.options.cuda_graphs
        return static_steps

    @torch.inference_mode()
    def encode(
        self, features: Tensor, early_mask: Tensor, static_steps: bool | None = None, head=None
    ) -> tuple[Tensor, Tensor | None]:
        """The gated encoder, and `head(encoder output)` if given (the late gates); one captured graph for
        both when every row shares its encoder mask. A graph's outputs are overwritten by its next call."""
        signatures = {tuple(row) for row in (early_mask | self._decoder_gate).tolist()}
        if self.static(features.device, static_steps) and len(signatures) == 1:
            graph = self.pool(features.device.type == "cuda").encoder(signatures.pop(), features, head)
            return graph(features)
        encoder_out = self.gw.encode(features, MaskPlan(early_mask, self.gw.gate_names, features.device))
        return encoder_out, head(encoder_out) if head is not None else None

    def _streams(self, n: int) -> list[torch.cuda.Stream]:
        """CUDA streams for `n` lanes."""
        while len(self._lane_streams) < n:
            self._lane_streams.append(torch.cuda.Stream())
        return self._lane_streams[:n]

    def pool(self, capture: bool) -> GraphPool:
        if capture not in self._pools:
            self._pools[capture] = GraphPool(self.gw, capture=capture)
        return self._pools[capture]

    def groups(self, mask: Tensor) -> list[tuple[list[int], tuple[bool, ...] | None]]:
        """(rows, signature) per group; signature None marks the row-gather group of rare signatures.
        Encoder gates do not take part: only decoder gates change a decoding step."""
        signatures = [tuple(row) for row in (mask | ~self._decoder_gate).tolist()]
        counts = Counter(signatures).most_common()
        if len(counts) > self.options.max_groups:
            graphed = {s for s, _ in counts[: self.options.max_groups - 1]}
        else:
            graphed = {s for s, _ in counts}
        groups = [
            ([r for r, s in enumerate(signatures) if s == sig], sig) for sig, _ in counts if sig in graphed
        ]
        rare = [r for r, s in enumerate(signatures) if s not in graphed]
        return groups + ([(rare, None)] if rare else [])

    @torch.inference_mode()
    def __call__(
        self,
        encoder_out: Tensor,
        prompts: Tensor,
        mask: Tensor,
        max_new_tokens: int | None = None,
        static_steps: bool | None = None,
    ) -> list[list[int]]:
        """Token ids per row (prompt and end-of-text excluded). `mask` is [batch, n_gates] bool.
        `static_steps` forces the fixed-shape step (True) or the eager one (False); by default CUDA
        uses captured graphs when `cuda_graphs` is on, and the CPU runs eagerly."""
        o = self.options
        new_tokens, max_len = cache_length(self.gw, prompts.shape[1], max_new_tokens or o.max_new_tokens)
        on_cuda = encoder_out.device.type == "cuda"
        static = self.static(encoder_out.device, static_steps)
        groups = self.groups(mask) if static else [(list(range(len(mask))), None)]
        out: list[list[int]] = [[] for _ in range(len(mask))]
        prompts = prompts.to(encoder_out.device)
        lanes = []
        for rows, signature in groups:
            if len(rows) == len(mask):  # one group, in order: no copies
                enc, pr = encoder_out, prompts
            else:
                index = torch.tensor(rows, device=encoder_out.device)
                enc, pr = encoder_out.index_select(0, index), prompts.index_select(0, index)
            if o.beams > 1:
                enc, pr = repeat_rows(enc, o.beams), repeat_rows(pr, o.beams)
            if signature is None:
                plan = MaskPlan(repeat_rows(mask[rows], o.beams), self.gw.gate_names, encoder_out.device)
                steps = EagerSteps(self.gw, enc, plan, max_len)
                lanes.append(
                    (steps, pr) if o.beams > 1 else StepLane(steps, pr, self.tokens, o.min_new_tokens)
                )
            elif o.beams > 1:
                lanes.append((self.pool(on_cuda).steps(signature, pr, max_len, enc), pr))
            else:
                lanes.append(
                    self.pool(on_cuda).greedy(
                        signature, pr, max_len, enc, self.tokens, new_tokens, o.min_new_tokens
                    )
                )
        if o.beams > 1:
            decoded = [
                beam_search(steps, pr, self.tokens, new_tokens, o.beams, o.length_penalty, o.min_new_tokens)
                for steps, pr in lanes
            ]
        else:
            decoded = greedy_lanes(lanes, new_tokens, self._streams(len(lanes)) if on_cuda else None)
        for (rows, _), group in zip(groups, decoded, strict=True):
            for r, tokens in zip(rows, group, strict=True):
                out[r] = tokens
        return out
