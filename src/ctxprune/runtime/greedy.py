"""Greedy decoding and language detection, one mask per row fixed for the utterance; token
suppression as HF's Whisper `generate` (runtime/suppression.py)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Protocol

import torch
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.loops import LoopGuard
from ctxprune.runtime.steps import EagerSteps, Steps
from ctxprune.runtime.suppression import Suppression
from ctxprune.runtime.timestamps import TimestampRules, sample, sot_index

MAX_NEW_TOKENS = 224  # Whisper's own sample length: half the text context


@torch.inference_mode()
def detect_language(
    gw: GatedWhisper, encoder_out: Tensor, special: WhisperTokens, gates: Gates = None
) -> list[str]:
    """The most likely language tag for each row, from the logits after `<|startoftranscript|>`."""
    steps = EagerSteps(gw, encoder_out, gates, 1)
    sot = torch.full((encoder_out.shape[0], 1), special.sot, device=encoder_out.device)
    logits = steps.prompt(sot)
    codes = list(special.lang_to_id)
    ids = torch.tensor([special.lang_to_id[c] for c in codes], device=logits.device)
    return [codes[j] for j in logits[:, ids].argmax(-1).tolist()]


class Lane(Protocol):
    """A row group decoded greedily: `start` decodes the prompt and picks the first token, `advance`
    one more; both return 'every row has ended' as a device tensor, so the host need not wait."""

    prompts: Tensor
    special: WhisperTokens
    rules: TimestampRules | None  # the long-form state, where the lane keeps scores
    guard: LoopGuard | None  # where loops stop rows: which rows it stopped

    def start(self) -> Tensor: ...

    def advance(self) -> Tensor: ...

    def generated(self) -> list[list[int]]: ...


class StepLane:
    """A `Lane` over any `Steps`, the choice of token on the host's stream. `cuda_graphs.GraphedGreedy`
    is a `Lane` with the choice inside its graphs. With `scores` the lane keeps the long-form scores
    (`runtime.timestamps`); with `timestamps` (prompts without `<|notimestamps|>`) Whisper's timestamp
    rules apply too; `temperature` > 0 samples; with `loop_guard` a row that loops ends there
    (`runtime.loops`)."""

    def __init__(
        self,
        steps: Steps,
        prompts: Tensor,
        special: WhisperTokens,
        min_new_tokens: int = 0,
        scores: bool = False,
        timestamps: bool = False,
        temperature: float = 0.0,
        loop_guard: bool = False,
    ):
        self.steps, self.prompts, self.special, self.min_new_tokens = steps, prompts, special, min_new_tokens
        self.scores, self.timestamps, self.temperature = scores or timestamps, timestamps, temperature
        self.loop_guard = loop_guard
        self.rules: TimestampRules | None = None
        self.guard: LoopGuard | None = None
        self.out: list[Tensor] = []

    def start(self) -> Tensor:
        logits = self.steps.prompt(self.prompts)
        self.suppress = Suppression(self.special, logits.shape[-1], logits.device, self.min_new_tokens)
        self.done = torch.zeros(self.prompts.shape[0], dtype=torch.bool, device=logits.device)
        if self.loop_guard:
            self.guard = LoopGuard(self.prompts.shape[0], logits.device)
        if self.scores:
            vocab, rows = logits.shape[-1], len(self.prompts)
            self.rules = TimestampRules(self.special, vocab, rows, logits.device, apply=self.timestamps)
            self.rules.reset(self.steps.prompt_logits[:, sot_index(self.prompts.shape[1], self.timestamps)])
        return self._choose(logits)

    def advance(self) -> Tensor:
        return self._choose(self.steps.step(self.out[-1]))

    def _choose(self, logits: Tensor) -> Tensor:
        step = len(self.out)
        scores = self.suppress(logits, step)
        if self.rules is not None:
            scores = self.rules(scores, first=step == 0)
        nxt = torch.where(self.done, self.special.eot, sample(scores, self.temperature))
        if self.rules is not None:
            self.rules.record(scores, nxt, self.done)
        self.out.append(nxt)
        ended = nxt == self.special.eot
        if self.guard is not None:
            ended |= self.guard(nxt, self.done)
        self.done |= ended
        return self.done.all()

    def generated(self) -> list[list[int]]:
        return torch.stack(self.out, 1).tolist()


@torch.inference_mode()
def greedy_lanes(
    lanes: list[Lane],
    max_new_tokens: int | list[int],
    streams: list | None = None,
    started: list[Tensor | None] | None = None,
) -> list[list[list[int]]]:
    """Greedy decoding of several row groups ("lanes") in lockstep; token ids per lane and row.

    On CUDA each lane runs on its own stream, so that the lanes' (captured) steps overlap on the GPU,
    and step t+1 is launched before the host learns whether token t ended every row: the host waits
    only for the end flags of the step before (copied to pinned memory, behind an event), never for
    the step in flight. A lane whose rows have all ended stops; its last launched step is unused.
    `max_new_tokens` may be given per lane (lanes whose prompts are longer have fewer positions left).
    `started`: per lane, the end flag of a `start` already launched on its stream (`decoding.Started`),
    or None to start it here."""
    cuda = lanes[0].prompts.device.type == "cuda"
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(lanes)
    if streams is None:
        streams = [torch.cuda.Stream() if cuda else None for _ in lanes]
    started = started or [None] * len(lanes)
    flags = torch.zeros(2, len(lanes), dtype=torch.bool, pin_memory=cuda)  # by step parity
    events: list[list] = [[None] * len(lanes), [None] * len(lanes)]

    def launch(i: int, step: int, call) -> None:
        with on_stream(streams[i]):
            flags[step % 2, i].copy_(call(), non_blocking=cuda)
            if cuda:
                events[step % 2][i] = torch.cuda.Event()
                events[step % 2][i].record()

    for i, lane in enumerate(lanes):
        if cuda:
            streams[i].wait_stream(torch.cuda.current_stream())
        launch(i, 0, lane.start if started[i] is None else (lambda done=started[i]: done))
    active = list(range(len(lanes)))
    for step in range(1, max(limits)):
        active = [i for i in active if step < limits[i]]
        for i in active:  # launch step `step`, then read the flags of `step - 1`
            launch(i, step, lanes[i].advance)
        if cuda:
            for i in active:
                events[(step - 1) % 2][i].synchronize()
        active = [i for i in active if not flags[(step - 1) % 2, i]]
        if not active:
            break
    for stream in streams:
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)
    return [[lane.special.until_end(row) for row in lane.generated()] for lane in lanes]


def on_stream(stream):
    """`with on_stream(s)`: run on CUDA stream `s`; a no-op where `s` is None (the CPU)."""
    return torch.cuda.stream(stream) if stream is not None else nullcontext()


def cache_length(gw: GatedWhisper, prompt_len: int, max_new_tokens: int) -> tuple[int, int]:
    """(new tokens, KV positions) within the decoder's position table."""
    max_new_tokens = min(max_new_tokens, gw.config.max_target_positions - prompt_len)
    return max_new_tokens, prompt_len + max_new_tokens


@torch.inference_mode()
def greedy_decode(
    gw: GatedWhisper,
    encoder_out: Tensor,
    prompts: Tensor,
    special: WhisperTokens,
    gates: Gates = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[list[int]]:
    """Eager greedy decoding of a batch with any mix of masks. `prompts` is [batch, P]."""
    max_new_tokens, max_len = cache_length(gw, prompts.shape[1], max_new_tokens)
    steps = EagerSteps(gw, encoder_out, gates, max_len)
    lane = StepLane(steps, prompts.to(encoder_out.device), special)
    return greedy_lanes([lane], max_new_tokens)[0]
