"""CUDA graphs for the runtime: the encoder per early-mask signature, and per decoder signature the
prefill (cross K/V and prompt) and the one-token step.

At batch 1 a Whisper-base decoding step is a few hundred small kernels; launching them from Python costs
far more than running them. A signature is one mask shared by every row of the group, so a captured
graph holds no gather or scatter: skipped branches are simply absent from it, and the saving is the
skipped kernels' own time. Buffers (inputs, KV cache, outputs) are allocated once per graph and reused
by every batch that shares its key. Each graph keeps its own memory pool: with a shared one, a graph's
output could sit where another graph writes its temporaries (the encoder output is still read after the
decoder's graphs run). With `capture=False` (CPU, tests) the same fixed-shape code runs eagerly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from ctxprune.gating.policy import LateStage, Masks
from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.loops import LoopGuard
from ctxprune.runtime.suppression import Suppression
from ctxprune.runtime.timestamps import TimestampRules, sample, sot_index


class Captured:
    """`fn()` (tensors out) over static buffers: captured at its first call and replayed after, or eager.
    `restore` lists tensors that the warm-up run changes and the real first call must see unchanged."""

    def __init__(self, fn: Callable[[], Tensor], capture: bool, restore: tuple[Tensor, ...] = ()):
        self.fn, self.capture, self.restore = fn, capture, restore
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Tensor | None = None

    def __call__(self) -> Tensor:
        if not self.capture:
            return self.fn()
        if self.graph is None:
            saved = [t.clone() for t in self.restore]
            side = torch.cuda.Stream()  # warm up on a side stream, as torch.cuda.graphs asks
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn()
            torch.cuda.current_stream().wait_stream(side)
            for t, s in zip(self.restore, saved, strict=True):
                t.copy_(s)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA call (a server's) cannot invalidate this capture
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.out = self.fn()
        self.graph.replay()
        return self.out


class GraphedSteps:
    """`Steps` over fixed shapes, captured as graphs; `bind` starts an utterance. Outputs are overwritten
    by the next call. The prefill reads the prompt's positions (a fixed arange); a step attends over the
    whole cache at a position that advances on the device."""

    def __init__(
        self, gw: GatedWhisper, gates: MaskPlan, batch: int, prompt_len: int, max_len: int, capture: bool
    ) -> None:
        self.gw, self.gates = gw, gates
        self.cache = gw.new_cache(batch, max_len)
        p = self.cache.self_k[0]
        c = gw.config
        self.encoder_out = torch.zeros(
            batch, c.max_source_positions, c.d_model, device=p.device, dtype=p.dtype
        )
        self.prompts = torch.zeros(batch, prompt_len, dtype=torch.long, device=p.device)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=p.device)
        self.prompt_positions = torch.arange(prompt_len, device=p.device)
        self.position = torch.zeros(1, dtype=torch.long, device=p.device)
        self._prefill = Captured(self.run_prefill, capture)
        self._step = Captured(self.run_step, capture, restore=(self.position,))

    def bind(self, encoder_out: Tensor) -> GraphedSteps:
        self.encoder_out.copy_(encoder_out)
        return self

    def prompt(self, prompts: Tensor) -> Tensor:
        self.prompts.copy_(prompts)
        return self._prefill()

    def step(self, tokens: Tensor) -> Tensor:
        self.token.copy_(tokens[:, None])
        return self._step()

    def reorder(self, index: Tensor) -> None:
        self.cache.reorder(index)

    def run_prefill(self) -> Tensor:
        """The uncaptured prefill: cross K/V and the prompt, logits after it."""
        return self.run_prefill_all()[:, -1]

    def run_prefill_all(self) -> Tensor:
        """The prefill's logits at every prompt position [batch, prompt length, vocab]."""
        self.gw.prefill_cross(self.encoder_out, self.cache, self.gates)
        prompt_len = self.prompts.shape[1]
        logits = self.gw.decode(self.prompts, self.prompt_positions, self.cache, self.gates, prompt_len)
        self.position.fill_(prompt_len)
        return logits

    def run_step(self) -> Tensor:
        """The uncaptured step: one token per row at the device-side position, which then advances."""
        logits = self.gw.decode(self.token, self.position, self.cache, self.gates)[:, -1]
        self.position.add_(1)
        return logits


class GraphedGreedy:
    """Greedy decoding of one signature group with the choice of token inside the graphs: each replay
    decodes a token for every row, suppresses (and applies the timestamp rules), picks, records it and
    feeds it to the next replay, so that the host only replays and reads one end flag (a `greedy.Lane`).
    `scores`, `timestamps` and `loop_guard` as for `greedy.StepLane`; `sot_index` is where
    `<|startoftranscript|>` sits in the prompts (the no-speech probability)."""

    def __init__(
        self,
        steps: GraphedSteps,
        special: WhisperTokens,
        max_new_tokens: int,
        min_new_tokens: int,
        capture: bool,
        scores: bool = False,
        timestamps: bool = False,
        temperature: float = 0.0,
        sot_index: int = 0,
        loop_guard: bool = False,
    ):
        self.steps, self.special, self.min_new_tokens = steps, special, min_new_tokens
        self.temperature, self.sot_index = temperature, sot_index
        device, batch = steps.token.device, steps.token.shape[0]
        vocab = steps.gw.config.vocab_size
        suppress = Suppression(special, vocab, device, min_new_tokens)
        self.first_bias = suppress.bias(0)
        self.later_bias, self.no_end_bias = suppress.biases(False, True), suppress.biases(False, False)
        keep_scores = scores or timestamps
        self.rules = TimestampRules(special, vocab, batch, device, apply=timestamps) if keep_scores else None
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.out = torch.full((batch, max_new_tokens), special.eot, dtype=torch.long, device=device)
        self.count = torch.zeros(1, dtype=torch.long, device=device)
        self.guard = LoopGuard(batch, device) if loop_guard else None
        self._start = Captured(self._run_start, capture)
        state = (steps.position, steps.token, self.done, self.out, self.count)
        if self.guard is not None:
            state += (self.guard.tail, self.guard.looped)
        if self.rules is not None:
            r = self.rules
            state += (r.last, r.penultimate, r.last_timestamp, r.generated, r.sum_logprob, r.no_speech_prob)
        self._advance = Captured(self._run_advance, capture, restore=state)

    def bind(self, prompts: Tensor) -> GraphedGreedy:
        self.prompts = prompts
        return self

    def start(self) -> Tensor:
        self.steps.prompts.copy_(self.prompts)
        return self._start()

    def advance(self) -> Tensor:
        return self._advance()

    def generated(self) -> list[list[int]]:
        return self.out[:, : int(self.count)].tolist()

    def _choose(self, logits: Tensor, bias: Tensor, first: bool) -> Tensor:
        scores = logits.float() + bias
        if self.rules is not None:
            scores = self.rules(scores, first)
        nxt = torch.where(self.done, self.special.eot, sample(scores, self.temperature))
        if self.rules is not None:
            self.rules.record(scores, nxt, self.done)
        self.out.index_copy_(1, self.count, nxt[:, None])
        ended = nxt == self.special.eot
        if self.guard is not None:
            ended |= self.guard(nxt, self.done)
        self.done |= ended
        self.steps.token.copy_(nxt[:, None])
        self.count.add_(1)
        return self.done.all()

    def _run_start(self) -> Tensor:
        self.done.zero_()
        self.count.zero_()
        if self.guard is not None:
            self.guard.reset()
        logits = self.steps.run_prefill_all()
        if self.rules is not None:
            self.rules.reset(logits[:, self.sot_index])
        return self._choose(logits[:, -1], self.first_bias, first=True)

    def _run_advance(self) -> Tensor:
        logits = self.steps.run_step()
        bias = torch.where(self.count < self.min_new_tokens, self.no_end_bias, self.later_bias)
        return self._choose(logits, bias, first=False)


class GraphedEncoder:
    """The gated encoder over a fixed-shape features buffer, and the late stage of the gates on its
    output in the same graph (`gating.policy.two_stage`): (encoder output, late masks or None).

    The late stage is captured at the first call; later calls' late stages are the same function over
    the same fixed context buffers (`runtime.pipeline.FixedContext`) and `features`, so a replay reads the
    new request's context (the late stage may pool its audio from `features`, in the graph)."""

    def __init__(self, gw: GatedWhisper, gates: MaskPlan, features: Tensor, capture: bool) -> None:
        self.gw, self.gates, self.capture = gw, gates, capture
        self.features = torch.zeros_like(features)
        self._encode: Captured | None = None

    def __call__(self, features: Tensor, late: LateStage) -> tuple[Tensor, Masks | None]:
        if self._encode is None or not self.capture:

            def run() -> tuple[Tensor, Masks | None]:
                encoder_out = self.gw.encode(self.features, self.gates)
                return encoder_out, late(encoder_out)

            self._encode = Captured(run, self.capture)
        self.features.copy_(features)
        return self._encode()


class GraphPool:
    """Graphs by key (signature, batch, shapes, dtype), least recently used dropped first. Decoder
    signatures are whole mask rows with the encoder gates set (they do not change a decoding step)."""

    def __init__(self, gw: GatedWhisper, capture: bool = True, max_graphs: int = 32) -> None:
        self.gw = gw
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, GraphedSteps | GraphedGreedy | GraphedEncoder] = OrderedDict()
        self.capture = capture
        self.keys_built = 0

    def _get(self, key: tuple, build: Callable[[MaskPlan], object], mask_row: tuple[bool, ...], batch: int):
        if key not in self._graphs:
            mask = torch.tensor([list(mask_row)] * batch, dtype=torch.bool)
            self._graphs[key] = build(MaskPlan(mask, self.gw.gate_names, self.gw.device))
            self.keys_built += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return self._graphs[key]

    def steps(
        self, mask_row: tuple[bool, ...], prompts: Tensor, max_len: int, encoder_out: Tensor
    ) -> GraphedSteps:
        """Steps for rows that all share `mask_row`, bound to `encoder_out`."""
        batch, prompt_len = prompts.shape
        key = ("steps", mask_row, batch, prompt_len, max_len, encoder_out.dtype)

        def build(plan: MaskPlan) -> GraphedSteps:
            return GraphedSteps(self.gw, plan, batch, prompt_len, max_len, self.capture)

        return self._get(key, build, mask_row, batch).bind(encoder_out)

    def greedy(
        self,
        mask_row: tuple[bool, ...],
        prompts: Tensor,
        max_len: int,
        encoder_out: Tensor,
        special: WhisperTokens,
        max_new_tokens: int,
        min_new_tokens: int,
        scores: bool = False,
        timestamps: bool = False,
        temperature: float = 0.0,
        loop_guard: bool = False,
    ) -> GraphedGreedy:
        """A greedy lane for rows that all share `mask_row`, bound to `encoder_out` and `prompts`."""
        batch, prompt_len = prompts.shape
        sot = sot_index(prompt_len, timestamps)
        choice = (max_new_tokens, min_new_tokens, scores, timestamps, temperature, sot, loop_guard)
        key = ("greedy", mask_row, batch, prompt_len, max_len, choice, encoder_out.dtype)

        def build(plan: MaskPlan) -> GraphedGreedy:
            steps = GraphedSteps(self.gw, plan, batch, prompt_len, max_len, self.capture)
            return GraphedGreedy(steps, special, *choice[:2], self.capture, *choice[2:])

        lane = self._get(key, build, mask_row, batch)
        lane.steps.bind(encoder_out)
        return lane.bind(prompts)

    def encoder(self, mask_row: tuple[bool, ...], features: Tensor, policy: object) -> GraphedEncoder:
        """The encoder graph of an early signature; the late stage it captures belongs to `policy`."""
        key = ("encoder", mask_row, tuple(features.shape), features.dtype, id(policy))
        return self._get(
            key, lambda plan: GraphedEncoder(self.gw, plan, features, self.capture), mask_row, len(features)
        )
