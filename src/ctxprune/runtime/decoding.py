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
from typing import NamedTuple

import torch
from torch import Tensor

from ctxprune.errors import CtxpruneError
from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import DECODER_PREFIX, GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.beam import beam_search
from ctxprune.runtime.cuda_graphs import GraphedGreedy, GraphPool
from ctxprune.runtime.early_start import Signature, Started
from ctxprune.runtime.greedy import MAX_NEW_TOKENS, StepLane, cache_length, greedy_lanes, on_stream
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
    timestamps: bool = False  # Whisper's timestamp tokens and rules, and the long-form scores
    scores: bool = False  # the long-form scores (log-probability sums, no-speech probability) only
    temperature: float = 0.0  # > 0: sample (the long-form fallback); greedy only
    loop_guard: bool = False  # greedy: a row that loops ends there (runtime/loops.py); the pipeline
    # then has the dense teacher decode a pruned row that looped again

    def __post_init__(self):
        if self.beams < 1:
            raise CtxpruneError(f"beams must be at least 1 (--beams), got {self.beams}")
        if self.beams > 1 and self.temperature > 0:
            raise CtxpruneError("beam search does not sample; a temperature > 0 decodes with one beam")
        if self.beams > 1 and self.loop_guard:
            raise CtxpruneError("the loop guard watches greedy decoding; use it with one beam")
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
GUARDED = DecodeOptions(loop_guard=True)  # greedy with the loop guard: transcribe's and serve's default


class Decoded(NamedTuple):
    """`BatchDecoding.decode`'s answer, one entry per row."""

    tokens: list[list[int]]  # prompt and end-of-text excluded
    scores: list[tuple[float, int, float]]  # (sum of log-probabilities, tokens scored, no-speech prob.)
    looped: list[bool]  # stopped by the loop guard


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

    def groups(
        self, mask: Tensor, max_groups: int, lengths: list[int] | None = None
    ) -> list[tuple[list[int], tuple[bool, ...] | None]]:
        """(rows, decoder signature) per group; signature None marks the row-gather group of rare
        signatures. Encoder gates do not take part: only decoder gates change a decoding step. Rows
        whose prompts differ in length (previous text) never share a group."""
        lengths = lengths or [0] * len(mask)  # max_groups 0: every row to the row-gather path
        signatures = [decoder_signature(row, self.decoder_gate) for row in mask.tolist()]
        keys = list(zip(signatures, lengths, strict=True))
        counts = Counter(keys).most_common()
        kept = counts[: max_groups - 1] if len(counts) > max_groups else counts
        graphed = {k for k, _ in kept} if max_groups > 0 else set()  # counts[:-1] is not "none"
        groups = [([r for r, k in enumerate(keys) if k == g], g[0]) for g, _ in counts if g in graphed]
        rare = [r for r, k in enumerate(keys) if k not in graphed]
        by_length = {lengths[r]: [q for q in rare if lengths[q] == lengths[r]] for r in rare}
        return groups + [(rows, None) for rows in by_length.values()]

    def __call__(
        self,
        encoder_out: Tensor,
        prompts: Tensor | list[list[int]],
        mask: Tensor,
        options: DecodeOptions = GREEDY,
    ) -> list[list[int]]:
        """Token ids per row (prompt and end-of-text excluded); see `decode`."""
        return self.decode(encoder_out, prompts, mask, options).tokens

    def _greedy_lane(
        self, signature: Signature, encoder_out: Tensor, prompts: Tensor, o: DecodeOptions
    ) -> GraphedGreedy:
        """The fixed-shape greedy lane of a signature group, bound to its encoder output and prompts."""
        new_tokens, max_len = cache_length(self.gw, prompts.shape[1], o.max_new_tokens)
        choice = (o.min_new_tokens, o.scores, o.timestamps, o.temperature, o.loop_guard)
        pool = self.pool(o.path_on(encoder_out.device) == "graphs")
        return pool.greedy(signature, prompts, max_len, encoder_out, self.special, new_tokens, *choice)

    @torch.inference_mode()
    def start_early(
        self, encoder_out: Tensor, prompts: Tensor, signature: Signature, options: DecodeOptions
    ) -> Started:
        """Launch the first token of greedy decoding for a batch whose rows will all have decoder
        `signature`, before its mask is known (`runtime.early_start`); `decode` goes on with it if the
        mask has that signature, and starts the right lane behind it if not."""
        lane = self._greedy_lane(signature, encoder_out, prompts, options)
        stream = self._streams(1)[0] if encoder_out.device.type == "cuda" else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream())
        with on_stream(stream):
            return Started(signature, lane, lane.start())

    @torch.inference_mode()
    def decode(
        self,
        encoder_out: Tensor,
        prompts: Tensor | list[list[int]],
        mask: Tensor,
        options: DecodeOptions = GREEDY,
        started: Started | None = None,
    ) -> Decoded:
        """Token ids per row (prompt and end-of-text excluded), per row (sum of the chosen tokens'
        log-probabilities, tokens scored, no-speech probability), zeros unless `options.timestamps` or
        `options.scores`, and which rows the loop guard stopped. `mask` is [batch, n_gates] bool.
        `prompts` is a tensor when every row's prompt has the same length (it stays on the device), else
        token lists (rows with previous text), which never share a group across lengths. `started`: a
        lane launched by `start_early`, used where every row has its signature."""
        o = options
        device = encoder_out.device
        lengths = None if isinstance(prompts, Tensor) else [len(p) for p in prompts]
        if isinstance(prompts, Tensor):
            prompts = prompts.to(device)
        path = o.path_on(device)
        on_cuda = device.type == "cuda"
        groups = self.groups(mask, o.max_groups if path != "gather" else 0, lengths)
        lanes, limits, started_done = [], [], []
        for rows, signature in groups:
            if len(rows) == len(mask):  # one group, in order: no copies
                enc, pr = encoder_out, prompts
            else:
                index = torch.tensor(rows, device=device)
                enc = encoder_out.index_select(0, index)
                pr = prompts.index_select(0, index) if lengths is None else [prompts[r] for r in rows]
            if lengths is not None:
                pr = torch.tensor(pr, device=device)
            new_tokens, max_len = cache_length(self.gw, pr.shape[1], o.max_new_tokens)
            limits.append(new_tokens)
            early = started is not None and started.signature == signature and len(rows) == len(mask)
            started_done.append(started.done if early else None)
            if early:  # the lane that `start_early` launched, bound to these rows already
                lanes.append(started.lane)
                continue
            if o.beams > 1:
                enc, pr = repeat_rows(enc, o.beams), repeat_rows(pr, o.beams)
            if signature is None:
                plan = MaskPlan(repeat_rows(mask[rows], o.beams), self.gw.gate_names, device)
                steps = EagerSteps(self.gw, enc, plan, max_len)
                choice = (o.min_new_tokens, o.scores, o.timestamps, o.temperature, o.loop_guard)
                lanes.append((steps, pr) if o.beams > 1 else StepLane(steps, pr, self.special, *choice))
            elif o.beams > 1:
                lanes.append((self.pool(path == "graphs").steps(signature, pr, max_len, enc), pr))
            else:
                lanes.append(self._greedy_lane(signature, enc, pr, o))
        out: list[list[int]] = [[] for _ in range(len(mask))]
        scores: list[tuple[float, int, float]] = [(0.0, 0, 0.0)] * len(mask)
        if o.beams > 1:
            beam = (o.beams, o.length_penalty, o.min_new_tokens, o.scores, o.timestamps)
            for (rows, _), (steps, pr), n in zip(groups, lanes, limits, strict=True):
                tokens, kept = beam_search(steps, pr, self.special, n, *beam)
                for r, row, score in zip(rows, tokens, kept, strict=True):
                    out[r], scores[r] = row, score
            return Decoded(out, scores, [False] * len(mask))
        decoded = greedy_lanes(lanes, limits, self._streams(len(lanes)) if on_cuda else None, started_done)
        looped = [False] * len(mask)
        for (rows, _), group, lane, limit in zip(groups, decoded, lanes, limits, strict=True):
            rules, guard = lane.rules, lane.guard
            sums = rules.sum_logprob.tolist() if rules is not None else [0.0] * len(rows)
            no_speech = rules.no_speech_prob.tolist() if rules is not None else [0.0] * len(rows)
            stopped = guard.looped.tolist() if guard is not None else [False] * len(rows)
            for i, (r, tokens) in enumerate(zip(rows, group, strict=True)):
                out[r], looped[r] = tokens[:limit], stopped[i]
                ended = len(out[r]) < limit and not looped[r]  # end-of-text counts when it was chosen
                scores[r] = (sums[i], len(out[r]) + ended, no_speech[i])
        return Decoded(out, scores, looped)
