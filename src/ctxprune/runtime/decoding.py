"""Decoding a batch whose rows carry different masks: group rows by decoder signature, CUDA graphs per
group, the rare rest together on the row-gather path.

Masks follow the context (task, language), so a batch holds few distinct decoder masks. Each group runs
fixed-shape steps (prefill and step; captured as graphs on CUDA) with no gather or scatter. When a batch
holds more than `max_groups` signatures, the rarest share one eager pass in which rows that keep a
branch are gathered (`gating.skip.run_branch`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from ctxprune.errors import CtxpruneError
from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import DECODER_PREFIX, GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.beam import beam_search
from ctxprune.runtime.cuda_graphs import GraphPool
from ctxprune.runtime.greedy import MAX_NEW_TOKENS, StepLane, cache_length, greedy_lanes
from ctxprune.runtime.steps import EagerSteps, repeat_rows

PATHS = ("auto", "graphs", "eager", "gather")


@dataclass(frozen=True)
class DecodeOptions:
    """Every decoding choice of one call.

    `path`: `graphs` groups rows by decoder signature and replays captured CUDA graphs per group;
    `eager` runs the same fixed-shape code without capturing (what the graphs hold, on any device);
    `gather` decodes the whole batch in one eager pass whose branches gather the rows that keep them;
    `auto` is `graphs` on CUDA and `gather` elsewhere. `count_flops` measures what ran with
    FlopCounterMode, which cannot see inside a replayed graph: it decodes on the gather path."""

    beams: int = 1  # 1: greedy
    length_penalty: float = 1.0  # beam score: sum log p / length ** length_penalty (HF's default)
    max_new_tokens: int = MAX_NEW_TOKENS
    min_new_tokens: int = 0  # end-of-text suppressed before this many tokens (HF's min_new_tokens)
    path: str = "auto"
    max_groups: int = 8  # signatures per batch that get their own graphs; rarer ones share a gather pass
    count_flops: bool = False

    def __post_init__(self):
        if self.beams < 1:
            raise CtxpruneError(f"beams must be at least 1 (--beams), got {self.beams}")
        if self.path not in PATHS:
            raise CtxpruneError(f"unknown decoding path {self.path!r}; use one of: {', '.join(PATHS)}")

    def path_on(self, device: torch.device) -> str:
        """The path this call takes on `device`: graphs, eager or gather."""
        if self.count_flops:
            return "gather"
        if self.path == "auto":
            return "graphs" if device.type == "cuda" else "gather"
        if self.path == "graphs" and device.type != "cuda":
            return "eager"  # the same fixed-shape code, run without capturing
        return self.path


GREEDY = DecodeOptions()


def decoder_signature(mask_row: list[bool], decoder_gate: list[bool]) -> tuple[bool, ...]:
    """A mask row with every encoder gate set: rows with equal decoder signatures decode alike."""
    return tuple(keep or not dec for keep, dec in zip(mask_row, decoder_gate, strict=True))


class BatchDecoding:
    """Greedy or beam decoding of a batch with a mask per row, grouped by decoder signature."""

    def __init__(self, gw: GatedWhisper, special: WhisperTokens):
        self.gw, self.special = gw, special
        self._pools: dict[bool, GraphPool] = {}
        self._lane_streams: list[torch.cuda.Stream] = []  # created once: creating them per batch costs
        self.decoder_gate = [n.startswith(DECODER_PREFIX) for n in gw.gate_names]

    def _streams(self, n: int) -> list[torch.cuda.Stream]:
        """CUDA streams for `n` lanes."""
        while len(self._lane_streams) < n:
            self._lane_streams.append(torch.cuda.Stream())
        return self._lane_streams[:n]

    def pool(self, capture: bool) -> GraphPool:
        """The graphs (captured) or fixed-shape steps (not captured) built so far."""
        if capture not in self._pools:
            self._pools[capture] = GraphPool(self.gw, capture=capture)
        return self._pools[capture]

    def groups(self, mask: Tensor, max_groups: int) -> list[tuple[list[int], tuple[bool, ...] | None]]:
        """(rows, decoder signature) per group; signature None marks the row-gather group of rare
        signatures. Encoder gates do not take part: only decoder gates change a decoding step."""
        signatures = [decoder_signature(row, self.decoder_gate) for row in mask.tolist()]
        counts = Counter(signatures).most_common()
        graphed = {s for s, _ in (counts[: max_groups - 1] if len(counts) > max_groups else counts)}
        groups = [
            ([r for r, s in enumerate(signatures) if s == sig], sig) for sig, _ in counts if sig in graphed
        ]
        rare = [r for r, s in enumerate(signatures) if s not in graphed]
        return groups + ([(rare, None)] if rare else [])

    @torch.inference_mode()
    def __call__(
        self, encoder_out: Tensor, prompts: Tensor, mask: Tensor, options: DecodeOptions = GREEDY
    ) -> list[list[int]]:
        """Token ids per row (prompt and end-of-text excluded). `mask` is [batch, n_gates] bool."""
        o = options
        new_tokens, max_len = cache_length(self.gw, prompts.shape[1], o.max_new_tokens)
        device = encoder_out.device
        path = o.path_on(device)
        on_cuda = device.type == "cuda"
        groups = self.groups(mask, o.max_groups) if path != "gather" else [(list(range(len(mask))), None)]
        prompts = prompts.to(device)
        lanes = []
        for rows, signature in groups:
            if len(rows) == len(mask):  # one group, in order: no copies
                enc, pr = encoder_out, prompts
            else:
                index = torch.tensor(rows, device=device)
                enc, pr = encoder_out.index_select(0, index), prompts.index_select(0, index)
            if o.beams > 1:
                enc, pr = repeat_rows(enc, o.beams), repeat_rows(pr, o.beams)
            pool = self.pool(path == "graphs")
            if signature is None:
                plan = MaskPlan(repeat_rows(mask[rows], o.beams), self.gw.gate_names, device)
                steps = EagerSteps(self.gw, enc, plan, max_len)
                lanes.append(
                    (steps, pr) if o.beams > 1 else StepLane(steps, pr, self.special, o.min_new_tokens)
                )
            elif o.beams > 1:
                lanes.append((pool.steps(signature, pr, max_len, enc), pr))
            else:
                lanes.append(
                    pool.greedy(signature, pr, max_len, enc, self.special, new_tokens, o.min_new_tokens)
                )
        if o.beams > 1:
            decoded = [
                beam_search(steps, pr, self.special, new_tokens, o.beams, o.length_penalty, o.min_new_tokens)
                for steps, pr in lanes
            ]
        else:
            decoded = greedy_lanes(lanes, new_tokens, self._streams(len(lanes)) if on_cuda else None)
        out: list[list[int]] = [[] for _ in range(len(mask))]
        for (rows, _), group in zip(groups, decoded, strict=True):
            for r, tokens in zip(rows, group, strict=True):
                out[r] = tokens
        return out
