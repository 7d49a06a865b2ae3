"""A request through the runtime, in the spirit of whisper's `DecodingTask`: context, gates and encoder
(`gating.policy.two_stage`), language detection, prompts, then decoding grouped by decoder signature.

The mask stays fixed for the whole utterance. On the graph path the encoder of a batch whose rows share
their early mask is one CUDA graph that also holds the late gates (their context waits in fixed buffers,
`FixedContext`), so the host copies the mask once, then picks the decoder's graphs. Where the early gates
read no context (a decoder gate set), the pooled log-mel that the late gates read is computed in that graph
from its own features buffer, not launched from the host before it for each request.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

import ctxprune.flop_formulas  # noqa: F401  (CPU attention counted, as on CUDA)
from ctxprune.errors import CtxpruneError
from ctxprune.gating.policy import LateStage, MaskPolicy, Masks, PredictedMasks, two_stage
from ctxprune.gating.predictor import GateContext
from ctxprune.gating.skip import MaskPlan
from ctxprune.gating.space import GateSpace
from ctxprune.models.whisper import STACK_PREFIX, GatedWhisper
from ctxprune.models.whisper_context import UNKNOWN_LANGUAGE, pooled_encoder, pooled_log_mel
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.decoding import GREEDY, BatchDecoding, DecodeOptions, decoder_signature
from ctxprune.runtime.early_start import SignatureGuesses
from ctxprune.runtime.greedy import detect_language

ENCODER = STACK_PREFIX["encoder"]


class Fallback(NamedTuple):
    """A row the loop guard stopped, decoded again by the dense teacher."""

    tokens: int  # the length of the gated decoding that looped
    encoded_again: bool  # the teacher's encoder ran too (the row's encoder was pruned, or not the teacher's)


@dataclass
class GatedResult:
    tokens: list[list[int]]
    languages: list[str]
    mask: Tensor  # [batch, n_gates] bool: True = the branch ran
    flops_encoder: int | None = None  # measured, whole batch (with count_flops): gates and encoder
    flops_decoder: int | None = None  # language detection and decoding
    # with timestamps: per row (sum of the chosen tokens' log-probabilities, tokens scored, no-speech prob.)
    scores: list[tuple[float, int, float]] | None = None
    looped: list[bool] | None = None  # with the loop guard: the row's final decoding was stopped by it
    fallback: list[Fallback | None] | None = None  # with the loop guard: rows the teacher decoded again

    def flops(self, space: GateSpace, prompt_len: int) -> list[tuple[float, float]]:
        """(executed, dense) FLOPs per utterance, from measured component costs and the decoded length;
        a row decoded again counts both decodings (and its dense encoder, where it ran twice)."""
        dense = [True] * len(space)
        fallback = self.fallback or [None] * len(self.tokens)
        out = []
        for row, keep, first in zip(self.tokens, self.mask.tolist(), fallback, strict=True):
            n = len(row) + 1  # the generated tokens plus end-of-text
            whole = space.executed_flops(dense, prompt_len, n)
            executed = space.executed_flops(keep, prompt_len, n)
            if first is not None:
                reused = 0.0 if first.encoded_again else _encoder_flops(space)
                executed = space.executed_flops(keep, prompt_len, first.tokens) + whole - reused
            out.append((executed, whole))
        return out


def _encoder_flops(space: GateSpace) -> float:
    """The dense encoder's FLOPs: its front-end (the ungated per-utterance cost) and its branches."""
    return space.ungated.per_utterance + sum(space.costs[i].per_utterance for i in space.indices(ENCODER))


class FixedContext:
    """A predictor's context in fixed device buffers, so that the late gates can be captured in the
    encoder's CUDA graph: each request copies its context in, and a replay reads it. Where only the late
    stage reads the pooled audio (`pools_audio`), it is not copied in: `late_stage` pools it in the graph."""

    def __init__(self, policy: PredictedMasks, batch: int, device: torch.device):
        c = policy.predictor.config
        self.policy = policy
        self.frames = torch.zeros(batch, dtype=torch.long, device=device)
        # pinned: the frame counts go to the device without waiting for it
        self._frames_host = torch.zeros(batch, dtype=torch.long, pin_memory=device.type == "cuda")
        self.context = GateContext(
            task=torch.zeros(batch, dtype=torch.long, device=device),
            language=torch.zeros(batch, dtype=torch.long, device=device),
            audio=torch.zeros(batch, c.audio_dim, device=device) if policy.reads("audio") else None,
            vectors={
                n: torch.zeros(batch, d, device=device) for n, d in c.vectors.items() if policy.reads(n)
            },
        )
        self.pools_audio = policy.reads("audio") and not policy.early_reads_context

    def load(self, ctx: GateContext, frames: Tensor) -> GateContext:
        """Copy a request's context in; every input the predictor reads must be given (a buffer left
        from the previous request would be a silently stale input), but for the audio that `late_stage`
        pools."""
        task, language = self.policy.predictor.tag_ids(ctx, self.frames.device)
        self.context.task.copy_(task)
        self.context.language.copy_(language)
        given = {"audio": ctx.audio, **ctx.vectors}
        audio = None if self.pools_audio else self.context.audio
        for name, buffer in (("audio", audio), *self.context.vectors.items()):
            if buffer is None:
                continue
            if given.get(name) is None:
                raise CtxpruneError(f"the gate predictor needs context input {name!r}, which was not given")
            buffer.copy_(given[name])
        self._frames_host.copy_(frames)
        self.frames.copy_(self._frames_host, non_blocking=True)
        return self.context

    def summarize(self, encoder_out: Tensor) -> Tensor:
        return pooled_encoder(encoder_out, self.frames)

    def late_stage(self, late: LateStage, features: Tensor) -> LateStage:
        """`late`, first pooling the audio from `features` where `pools_audio`. Given the encoder graph's
        own features buffer, the pooling is captured in that graph: at batch 1 the host launching its small
        kernels for each request costs more than running them. Its values are those of the eager path
        (`pooled_log_mel` of the same features and frames)."""
        if not self.pools_audio:
            return late

        def pooled_then_late(encoder_out: Tensor) -> Masks | None:
            self.context.audio.copy_(pooled_log_mel(features.float(), self.frames))
            return late(encoder_out)

        return pooled_then_late


class Pipeline:
    """Decode batches with per-utterance masks from a `MaskPolicy` (dense, random, static, predicted)."""

    def __init__(
        self,
        gw: GatedWhisper,
        special: WhisperTokens,
        policy: MaskPolicy,
        teacher: GatedWhisper | None = None,
    ):
        """`teacher`: the dense model that decodes the rows the loop guard stopped again, where it is not
        `gw` with every gate open (a gate set's own LoRA is merged into `gw`, not into its teacher)."""
        if policy.space.names != tuple(gw.gate_names):
            raise ValueError("the mask policy's gate space does not match this model")
        self.gw, self.special, self.policy = gw, special, policy
        self.decoding = BatchDecoding(gw, special)
        self.teacher = teacher or gw
        self.teacher_decoding = BatchDecoding(teacher, special) if teacher is not None else self.decoding
        self.teacher_shares_encoder = teacher is None or same_encoder(gw, teacher)
        self.decoder_gate = torch.tensor(self.decoding.decoder_gate)
        self._fixed: dict[tuple[int, torch.device], FixedContext] = {}  # by batch size and device
        self._prompt_tensors: dict[tuple, Tensor] = {}
        self.guesses = SignatureGuesses()  # the decoder signature to start decoding on early
        self.early_start = True  # off: decoding waits for the mask (what a bench compares against)

    @property
    def space(self) -> GateSpace:
        return self.policy.space

    def _prompts(
        self,
        languages: list[str],
        tasks: list[str],
        timestamps: bool,
        prefixes: list[list[int]] | None,
        device: torch.device,
    ) -> Tensor | list[list[int]]:
        """A tensor on `device` when every row's prompt has the same length, else token lists. Without
        previous text the tensor is kept per distinct prompt list: a host-to-device copy per request
        waits for the GPU."""
        rows = [
            (*prefix, *self.special.prompt(lang, t, timestamps))
            for lang, t, prefix in zip(languages, tasks, prefixes or [()] * len(tasks), strict=True)
        ]
        if len({len(r) for r in rows}) > 1:
            return [list(r) for r in rows]
        if prefixes:
            return torch.tensor(rows, device=device)
        key = (tuple(rows), device)
        if key not in self._prompt_tensors:
            if len(self._prompt_tensors) > 1024:
                self._prompt_tensors.clear()
            self._prompt_tensors[key] = torch.tensor(rows, device=device)
        return self._prompt_tensors[key]

    def _fixed_context(self, batch: int, device: torch.device) -> FixedContext:
        if (batch, device) not in self._fixed:
            self._fixed[(batch, device)] = FixedContext(self.policy, batch, device)
        return self._fixed[(batch, device)]

    def _encoder_stage(
        self, features: Tensor, path: str, fixed: FixedContext | None, then: Callable[[Tensor], None]
    ):
        """The encoder (and the late gates) as one graph when every row shares its early mask; `fixed`:
        the context buffers that the late gates read there (None on the gather path). `then(encoder
        output)` runs once the encoder is launched, before anything waits for it."""

        def encode(early: Masks, late: LateStage) -> tuple[Tensor, Masks | None]:
            # the encoder signature: the mask with every decoder gate set (they do not change the encoder)
            signatures = {tuple(row) for row in (early.values | self.decoder_gate).tolist()}
            if path != "gather" and len(signatures) == 1:
                graph = self.decoding.pool(path == "graphs").encoder(signatures.pop(), features, self.policy)
                out = graph(features, fixed.late_stage(late, graph.features) if fixed is not None else late)
                then(out[0])
                return out
            encoder_out = self.gw.encode(
                features, MaskPlan(early.values, self.gw.gate_names, features.device)
            )
            then(encoder_out)
            late = fixed.late_stage(late, features) if fixed is not None else late
            return encoder_out, late(encoder_out)

        return encode

    def _early_context(
        self, tasks: list[str], languages: list, prompts, prefixes, path: str, o: DecodeOptions
    ) -> tuple[str, str] | None:
        """The context whose usual decoder signature decoding may start on before the mask is known
        (`runtime.early_start`), or None: only for one greedy row on a fixed-shape path, whose mask is
        decided after the encoder (in a batch the rows' signatures vary, and the GPU has more to do),
        and without previous text (its prompt length changes every window: a wrong guess would capture
        graphs that are never used again)."""
        one_greedy_row = len(tasks) == 1 and isinstance(prompts, Tensor) and o.beams == 1 and not prefixes
        if self.early_start and self.policy.reads_context and one_greedy_row and path != "gather":
            return tasks[0], languages[0]
        return None

    @torch.inference_mode()
    def run(
        self,
        features: Tensor,
        frames: Tensor,
        tasks: list[str],
        languages: list[str | None],
        vectors: dict[str, Tensor] | None = None,
        options: DecodeOptions = GREEDY,
        prefixes: list[list[int]] | None = None,
    ) -> GatedResult:
        """Decode a batch; a `None` language is detected (gates then see the `unknown` language).
        `prefixes` (long-form): per row, tokens before `<|startoftranscript|>` (`<|startofprev|>` and the
        previous window's text).
        With `options.count_flops`, FlopCounterMode measures what ran, as batch totals: the encoder
        phase (both gate stages and the encoder) and the decoder phase (language detection, decoding)."""
        device = features.device
        path = options.path_on(device)
        fixed = None  # only a predictor reads the request's context: on the graph path, from fixed buffers
        if path != "gather" and self.policy.reads_context:
            fixed = self._fixed_context(len(tasks), device)
        pooled_now = self.policy.reads("audio") and not (fixed is not None and fixed.pools_audio)
        ctx = GateContext(
            task=tasks,
            language=[lang or UNKNOWN_LANGUAGE for lang in languages],
            audio=pooled_log_mel(features.float(), frames) if pooled_now else None,
            vectors=vectors or {},
        )
        # known languages: the prompts go to the device now, not between the encoder and the decoder
        known = None not in languages
        prompts = self._prompts(languages, tasks, options.timestamps, prefixes, device) if known else None
        summarize = lambda out: pooled_encoder(out, frames)  # noqa: E731
        if fixed is not None:
            ctx, summarize = fixed.load(ctx, frames), fixed.summarize
        early = self._early_context(tasks, languages, prompts, prefixes, path, options)
        guess = self.guesses.guess(early) if early is not None else None
        started = []

        def start_early(encoder_out: Tensor) -> None:
            if guess is not None:
                started.append(self.decoding.start_early(encoder_out, prompts, guess, options))

        encoder_counter, decoder_counter = (FlopCounterMode(display=False) for _ in range(2))
        with encoder_counter if options.count_flops else nullcontext():
            encode = self._encoder_stage(features, path, fixed, start_early)
            masks, encoder_out = two_stage(self.policy, ctx, encode, summarize)
            mask = masks.values.cpu()
        with decoder_counter if options.count_flops else nullcontext():
            if None in languages:
                plan = MaskPlan(mask, self.gw.gate_names, device)
                detected = detect_language(self.gw, encoder_out, self.special, plan)
                languages = [lang or d for lang, d in zip(languages, detected, strict=True)]
            if prompts is None:
                prompts = self._prompts(languages, tasks, options.timestamps, prefixes, device)
            decoded = self.decoding.decode(encoder_out, prompts, mask, options, *started)
        if early is not None:  # after decoding: nothing waits on it there
            self.guesses.record(early, decoder_signature(mask[0].tolist(), self.decoding.decoder_gate), guess)
        result = GatedResult(decoded.tokens, list(languages), mask)
        if options.timestamps or options.scores:
            result.scores = decoded.scores
        if options.count_flops:
            result.flops_encoder = encoder_counter.get_total_flops()
            result.flops_decoder = decoder_counter.get_total_flops()
        if options.loop_guard:
            result.looped, result.fallback = decoded.looped, [None] * len(tasks)
            self._decode_looped_again(result, features, encoder_out, prompts, options)
        return result

    def _decode_looped_again(
        self, result: GatedResult, features: Tensor, encoder_out: Tensor, prompts, options: DecodeOptions
    ) -> None:
        """Pruned rows that looped, decoded again by the dense teacher: it answers where the pruned model
        failed. The encoder output is reused where a row's encoder ran dense on the teacher's encoder
        weights. What this costs is added to the measured FLOPs and recorded in `result.fallback`."""
        keep = result.mask.tolist()
        student = self.teacher is not self.gw  # a gate set's own LoRA: even an all-open row is not dense
        rows = [r for r, hit in enumerate(result.looped) if hit and (student or not all(keep[r]))]
        if not rows:
            return
        encoder_counter, decoder_counter = (FlopCounterMode(display=False) for _ in range(2))
        index = torch.tensor(rows, device=encoder_out.device)
        with encoder_counter if options.count_flops else nullcontext():
            enc = encoder_out.index_select(0, index)
            encoder = self.space.indices(ENCODER)
            reused = [self.teacher_shares_encoder and all(keep[r][j] for j in encoder) for r in rows]
            encoded = [i for i, ok in enumerate(reused) if not ok]
            if encoded:  # rows whose encoder was pruned (or is not the teacher's): the teacher's encoder
                enc[encoded] = self.teacher.encode(features[[rows[i] for i in encoded]])
        with decoder_counter if options.count_flops else nullcontext():
            pr = prompts.index_select(0, index) if isinstance(prompts, Tensor) else [prompts[r] for r in rows]
            dense = torch.ones(len(rows), len(self.space), dtype=torch.bool)
            again = self.teacher_decoding.decode(enc, pr, dense, options)
        for i, r in enumerate(rows):
            result.fallback[r] = Fallback(len(result.tokens[r]), i in encoded)
            result.tokens[r], result.looped[r] = again.tokens[i], again.looped[i]
            if result.scores is not None:
                result.scores[r] = again.scores[i]
        if options.count_flops:
            result.flops_encoder += encoder_counter.get_total_flops()
            result.flops_decoder += decoder_counter.get_total_flops()


def same_encoder(a: GatedWhisper, b: GatedWhisper) -> bool:
    """Whether two models' encoders hold the same weights (a decoder-only LoRA leaves it alone)."""
    pairs = zip(a.encoder.state_dict().values(), b.encoder.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)
