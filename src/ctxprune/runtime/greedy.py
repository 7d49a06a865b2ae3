"""Greedy decoding and language detection, one mask per row fixed for the utterance.

Token suppression follows HF's Whisper `generate`: `suppress_tokens` at every step and
`begin_suppress_tokens` at the first generated step.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.steps import EagerSteps

MAX_NEW_TOKENS = 224  # Whisper's own sample length: half the text context


@torch.inference_mode()
def detect_language(
    gw: GatedWhisper, encoder_out: Tensor, tokens: WhisperTokens, gates: Gates = None
) -> list[str]:
    """The most likely language tag for each row, from the logits after `<|startoftranscript|>`."""
    steps = EagerSteps(gw, encoder_out, gates, 1)
    sot = torch.full((encoder_out.shape[0], 1), tokens.sot, device=encoder_out.device)
    logits = steps.prompt(sot)
    codes = list(tokens.lang_to_id)
    ids = torch.tensor([tokens.lang_to_id[c] for c in codes], device=logits.device)
    return [codes[j] for j in logits[:, ids].argmax(-1).tolist()]


class Suppression:
    """Whisper's suppressed tokens as additive -inf biases, built once per decode (no per-step copies):
    `suppress_tokens` always, `begin_suppress_tokens` at the first step, and end-of-text before
    `min_new_tokens` (as HF's `min_new_tokens`; benchmarks use it to decode a fixed length)."""

    def __init__(
        self, tokens: WhisperTokens, vocab: int, device: torch.device | str, min_new_tokens: int = 0
    ):
        later = torch.zeros(vocab, device=device)
        later[list(tokens.suppress)] = -torch.inf
        first = later.clone()
        first[list(tokens.begin_suppress)] = -torch.inf
        self.min_new_tokens = min_new_tokens
        self._biases: dict[tuple[bool, bool], Tensor] = {}  # by (first step, end-of-text allowed)
        for is_first, b in ((True, first), (False, later)):
            self._biases[(is_first, True)] = b
            self._biases[(is_first, False)] = b.clone().index_fill_(
                0, torch.tensor([tokens.eot], device=device), -torch.inf
            )

    def biases(self, first: bool, end_allowed: bool) -> Tensor:
        return self._biases[(first, end_allowed)]

    def bias(self, step: int) -> Tensor:
        return self.biases(step == 0, step >= self.min_new_tokens)

    def __call__(self, logits: Tensor, step: int) -> Tensor:
        """fp32 logits with the tokens of this step suppressed (a new tensor)."""
        return logits.float() + self.bias(step)


@torch.inference_mode()
def greedy_search(
    steps, prompts: Tensor, tokens: WhisperTokens, max_new_tokens: int, min_new_tokens: int = 0
) -> list[list[int]]:
    """Generated token ids per row (prompt and end-of-text excluded), over `EagerSteps` or `GraphedSteps`."""
    return greedy_lanes([StepLane(steps, prompts, tokens, min_new_tokens)], max_new_tokens)[0]


class StepLane:
    """A row group decoded greedily from the logits of `steps` (choice of token on the host's stream).
    `cuda_graphs.GraphedGreedy` has the same interface with the choice inside its graphs."""

    def __init__(self, steps, prompts: Tensor, tokens: WhisperTokens, min_new_tokens: int = 0):
        self.steps, self.prompts, self.tokens, self.min_new_tokens = steps, prompts, tokens, min_new_tokens
        self.out: list[Tensor] = []

    def start(self) -> Tensor:
        """Decode the prompt and choose the first token; returns 'every row has ended' (on the device)."""
        logits = self.steps.prompt(self.prompts)
        self.suppress = Suppression(self.tokens, logits.shape[-1], logits.device, self.min_new_tokens)
        self.done = torch.zeros(self.prompts.shape[0], dtype=torch.bool, device=logits.device)
        return self._choose(logits)

    def advance(self) -> Tensor:
        return self._choose(self.steps.step(self.out[-1]))

    def _choose(self, logits: Tensor) -> Tensor:
        step = len(self.out)
        nxt = torch.where(self.done, self.tokens.eot, self.suppress(logits, step).argmax(-1))
        self.out.append(nxt)
        self.done |= nxt == self.tokens.eot
        return self.done.all()

    def generated(self) -> list[list[int]]:
        return torch.stack(self.out, 1).tolist()


@torch.inference_mode()
def greedy_lanes(lanes: list, max_new_tokens: int, streams: list | None = None) -> list[list[list[int]]]:
    """Greedy decoding of several row groups ("lanes") in lockstep; token ids per lane and row.

    On CUDA each lane runs on its own stream, so that the lanes' (captured) steps overlap on the GPU,
    and step t+1 is launched before the host learns whether token t ended every row: the host waits
    only for the end flags of the step before (copied to pinned memory, behind an event), never for
    the step in flight. A lane whose rows have all ended stops; its last launched step is unused."""
    cuda = lanes[0].prompts.device.type == "cuda"
    if streams is None:
        streams = [torch.cuda.Stream() if cuda else None for _ in lanes]
    flags = torch.zeros(2, len(lanes), dtype=torch.bool, pin_memory=cuda)  # by step parity
    events: list[list] = [[None] * len(lanes), [None] * len(lanes)]

    def launch(i: int, step: int, call) -> None:
        with _on(streams[i]):
            flags[step % 2, i].copy_(call(), non_blocking=cuda)
            if cuda:
                events[step % 2][i] = torch.cuda.Event()
                events[step % 2][i].record()

    for i, lane in enumerate(lanes):
        if cuda:
            streams[i].wait_stream(torch.cuda.current_stream())
        launch(i, 0, lane.start)
    active = list(range(len(lanes)))
    for step in range(1, max_new_tokens):
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
    return [[lane.tokens.until_end(row) for row in lane.generated()] for lane in lanes]


def _on(stream):
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
    tokens: WhisperTokens,
    gates: Gates = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[list[int]]:
    """Eager greedy decoding of a batch with any mix of masks. `prompts` is [batch, P]."""
    max_new_tokens, max_len = cache_length(gw, prompts.shape[1], max_new_tokens)
    steps = EagerSteps(gw, encoder_out, gates, max_len)
    return greedy_search(steps, prompts.to(encoder_out.device), tokens, max_new_tokens)
