"""Whisper + gate predictor: decide each utterance's mask from its context, then decode with it.

Order of a request: features -> early gates (task, language, pooled log-mel, caller vectors) ->
gated encoder -> late gates (the same, plus the pooled encoder output) -> gated decoding. The mask
then stays fixed for the whole utterance. With `--language auto`, gates see the `unknown` language
bucket, since the language is only known after the encoder has run.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode
from transformers import WhisperConfig

from ctxprune.errors import CtxpruneError
from ctxprune.gating.predictor import GateContext, GatePredictor, PredictorConfig
from ctxprune.gating.random_gates import RandomGates
from ctxprune.gating.skip import MaskPlan
from ctxprune.gating.space import GateSpace
from ctxprune.gating.straight_through import apply_forced, inference_gates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.models.whisper_tokens import TASKS, WhisperTokens
from ctxprune.runtime.decoding import GREEDY, BatchDecoder, DecodeOptions
from ctxprune.runtime.greedy import detect_language

UNKNOWN_LANGUAGE = "unknown"


def pooled_log_mel(features: Tensor, frames: Tensor) -> Tensor:
    """Mean and std of each mel band over the real (unpadded) frames: [batch, 2 * n_mels]."""
    valid = (
        torch.arange(features.shape[-1], device=features.device)[None] < frames.to(features.device)[:, None]
    )
    w = valid[:, None].to(features.dtype)
    n = w.sum(-1).clamp_min(1)
    mean = (features * w).sum(-1) / n
    var = (((features - mean[..., None]) ** 2) * w).sum(-1) / n
    return torch.cat([mean, var.sqrt()], -1)


def pooled_encoder(encoder_out: Tensor, frames: Tensor) -> Tensor:
    """Mean of the encoder output over positions that saw real audio (the conv front-end halves frames)."""
    positions = (frames.to(encoder_out.device) + 1) // 2
    valid = torch.arange(encoder_out.shape[1], device=encoder_out.device)[None] < positions[:, None]
    w = valid[..., None].to(encoder_out.dtype)
    return (encoder_out * w).sum(1) / w.sum(1).clamp_min(1)


def whisper_predictor_config(
    config: WhisperConfig, space: GateSpace, languages: list[str], **kwargs
) -> PredictorConfig:
    return PredictorConfig(
        space=space,
        tasks=list(TASKS),
        languages=languages,
        audio_dim=2 * config.num_mel_bins,
        encoder_dim=config.d_model,
        late_prefix="dec.",
        **kwargs,
    )


class LateGates:
    """The late gates as a function of the encoder output alone: the rest of their context waits in fixed
    buffers, so that the runtime can capture them in the encoder's CUDA graph (one replay, then one copy
    of the mask to the host) instead of launching the predictor's small kernels one by one."""

    def __init__(self, predictor: GatePredictor, batch: int, device: torch.device):
        c = predictor.config
        self.predictor = predictor
        self.frames = torch.zeros(batch, dtype=torch.long, device=device)
        self.task = torch.zeros(batch, dtype=torch.long, device=device)
        self.language = torch.zeros(batch, dtype=torch.long, device=device)
        self.audio = torch.zeros(batch, c.audio_dim, device=device)
        self.vectors = {name: torch.zeros(batch, dim, device=device) for name, dim in c.vectors.items()}

    def load(self, ctx: GateContext, frames: Tensor) -> LateGates:
        task, language = self.predictor.tag_ids(ctx, self.task.device)
        self.task.copy_(task)
        self.language.copy_(language)
        if ctx.audio is not None:
            self.audio.copy_(ctx.audio)
        self.frames.copy_(frames)
        for name, buffer in self.vectors.items():
            if name in self.predictor.config.context:
                if name not in ctx.vectors:
                    raise CtxpruneError(
                        f"the gate predictor needs context input {name!r}, which was not given"
                    )
                buffer.copy_(ctx.vectors[name])
        return self

    def __call__(self, encoder_out: Tensor) -> Tensor:
        ctx = GateContext(
            self.task, self.language, self.audio, pooled_encoder(encoder_out, self.frames), self.vectors
        )
        return inference_gates(self.predictor.late_logits(ctx))


@dataclass
class GatedResult:
    tokens: list[list[int]]
    languages: list[str]
    mask: Tensor  # [batch, n_gates] bool: True = the branch ran
    flops_encoder: int | None = None  # measured, whole batch (run with count_flops)
    flops_decoder: int | None = None

    def flops(self, space: GateSpace, prompt_len: int) -> list[tuple[float, float]]:
        """(executed, dense) FLOPs per utterance, from measured component costs and the decoded length."""
        dense = [True] * len(space)
        out = []
        for row, keep in zip(self.tokens, self.mask.tolist(), strict=True):
            n = len(row) + 1  # the generated tokens plus end-of-text
            out.append(
                (space.executed_flops(keep, prompt_len, n), space.executed_flops(dense, prompt_len, n))
            )
        return out


class PrunedWhisper:
    """Decode with per-utterance masks from a `GatePredictor`, a `RandomGates` baseline, or dense."""

    def __init__(
        self,
        gated: GatedWhisper,
        tokens: WhisperTokens,
        predictor: GatePredictor | None = None,
        random: RandomGates | None = None,
        decoding: DecodeOptions = GREEDY,
    ):
        self.gated = gated
        self.decoder = BatchDecoder(gated, tokens, decoding)
        self.tokens = tokens
        self.space = whisper_gate_space(gated)
        self.predictor = predictor
        self.random = random  # the LayerDrop-style baseline instead of a predictor
        if predictor is not None and predictor.space.fingerprint != self.space.fingerprint:
            raise ValueError("the predictor's gate space does not match this model")
        if predictor is not None:  # host copies, so that deciding a mask needs no device round trip
            self._early_index = predictor.early_index.cpu()
            self._late_index = predictor.late_index.cpu()
            self._early_open = set(self._early_index.tolist()) <= set(predictor.force_keep)
            self._constant: Tensor | None = None  # the one mask of a predictor that reads no context
        self._heads: dict[tuple[int, torch.device], LateGates] = {}  # by batch size and device

    def _reads_context(self) -> bool:
        return self.predictor is not None and bool(self.predictor.config.context)

    def _reads(self, name: str) -> bool:
        return self.predictor is not None and name in self.predictor.config.context

    def _prompts(self, languages: list[str], tasks: list[str], device: torch.device) -> Tensor:
        return torch.tensor(
            [self.tokens.prompt(lang, t) for lang, t in zip(languages, tasks, strict=True)], device=device
        )

    def _late_gates(self, batch: int, device: torch.device) -> LateGates:
        if (batch, device) not in self._heads:
            self._heads[(batch, device)] = LateGates(self.predictor, batch, device)
        return self._heads[(batch, device)]

    def decide(
        self,
        ctx: GateContext,
        encoder_out: Tensor | None = None,
        frames: Tensor | None = None,
        early_mask: Tensor | None = None,
    ) -> Tensor:
        """Hard masks [batch, n_gates]. Without `encoder_out`, late gates are left open (pre-encoder);
        with it, `early_mask` (this batch's pre-encoder masks) saves predicting the early gates again."""
        p = self.predictor
        batch = len(ctx.task)
        if p is None:
            return torch.ones(batch, len(self.space), dtype=torch.bool)
        if not self._reads_context():  # a static gate set: the same mask for every request, decided once
            if self._constant is None:
                one = GateContext(task=ctx.task[:1], language=ctx.language[:1])
                self._constant = apply_forced(inference_gates(p(one)).cpu(), p.force_keep, p.force_skip)
            return self._constant.expand(batch, -1).clone()
        with torch.inference_mode():
            if early_mask is None:
                early_mask = torch.ones(batch, len(self.space), dtype=torch.bool)
                if not self._early_open:  # else every early gate is forced open: nothing to predict
                    early_mask[:, self._early_index] = inference_gates(p.early_logits(ctx)).cpu()
                early_mask = apply_forced(early_mask, p.force_keep, p.force_skip)
            if encoder_out is None:
                return early_mask
            ctx.encoder = pooled_encoder(encoder_out, frames)
            return self._with_late(early_mask, inference_gates(p.late_logits(ctx)))

    def _with_late(self, early_mask: Tensor, late: Tensor) -> Tensor:
        """The batch's early masks with the late gates' decisions in place, forced lists applied."""
        mask = early_mask.clone()
        mask[:, self._late_index] = late.cpu()
        return apply_forced(mask, self.predictor.force_keep, self.predictor.force_skip)

    @torch.inference_mode()
    def run(
        self,
        features: Tensor,
        frames: Tensor,
        tasks: list[str],
        languages: list[str | None],
        vectors: dict[str, Tensor] | None = None,
        max_new_tokens: int | None = None,
        count_flops: bool = False,
    ) -> GatedResult:
        """Decode a batch; a `None` language is detected (gates then see the `unknown` language).
        With `count_flops`, FlopCounterMode measures what ran: the encoder phase (early gates and
        encoder) and the decoder phase (late gates, language detection and decoding), batch totals;
        decoding is then eager, since the counter cannot see inside a replayed CUDA graph."""
        device = features.device
        ctx = GateContext(
            task=tasks,
            language=[lang or UNKNOWN_LANGUAGE for lang in languages],
            audio=pooled_log_mel(features.float(), frames) if self._reads("audio") else None,
            vectors=vectors or {},
        )
        encoder_counter, decoder_counter = (FlopCounterMode(display=False) for _ in range(2))
        random_mask = self.random.sample(len(tasks)) if self.random is not None else None
        # known languages: the prompts go to the device now, not between the encoder and the decoder
        prompts = self._prompts(languages, tasks, device) if None not in languages else None
        static = False if count_flops else None  # None: CUDA graphs where the runtime allows them
        head = None  # with graphs, late gates that read the context are captured with the encoder
        if self._reads_context() and random_mask is None and self.decoder.static(device, static):
            head = self._late_gates(len(tasks), device).load(ctx, frames)
        with encoder_counter if count_flops else nullcontext():
            early_mask = self.decide(ctx) if random_mask is None else random_mask
            encoder_out, late = self.decoder.encode(features, early_mask, static, head)
        with decoder_counter if count_flops else nullcontext():
            if late is not None:
                mask = self._with_late(early_mask, late)
            elif random_mask is None:
                mask = self.decide(ctx, encoder_out, frames, early_mask)
            else:
                mask = random_mask
            if any(lang is None for lang in languages):
                plan = MaskPlan(mask, list(self.space.names), device)
                detected = detect_language(self.gated, encoder_out, self.tokens, plan)
                languages = [lang or d for lang, d in zip(languages, detected, strict=True)]
            if prompts is None:
                prompts = self._prompts(languages, tasks, device)
            out = self.decoder(encoder_out, prompts, mask, max_new_tokens, static_steps=static)
        result = GatedResult(out, list(languages), mask)
        if count_flops:
            result.flops_encoder = encoder_counter.get_total_flops()
            result.flops_decoder = decoder_counter.get_total_flops()
        return result
