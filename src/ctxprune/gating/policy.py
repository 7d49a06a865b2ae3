"""Mask policies: where a batch's masks come from, and the one place that spells out the two-stage order.

A request's mask is decided in two stages. Early gates (the encoder's) are decided from what exists
before the model runs (task, language, pooled input features, caller vectors); the encoder runs under
them; late gates (the decoder's) may also read a summary of the encoder output. `two_stage` is that
order, and inference (the runtime), training and calibration all go through it.

A policy answers `early(ctx)` (a full mask, late gates open), `late(ctx, summary)` (the late gates'
values alone, or None for a policy without a late stage) and `join(early, late)` (the full mask). Its
`mode` says how logits become gates: `HARD` (inference: keep a branch exactly when its logit is
positive) or `StraightThrough` (training: hard 0/1 forward, soft backward, with the keep probabilities
that the sparsity loss needs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ctxprune.gating.predictor import GateContext, GatePredictor
from ctxprune.gating.random_gates import RandomGates
from ctxprune.gating.space import GateSpace
from ctxprune.gating.straight_through import inference_gates, straight_through_gates


@dataclass(frozen=True)
class Hard:
    """Inference: `logit > 0`, a bool mask."""


@dataclass(frozen=True)
class StraightThrough:
    """Training: Gumbel-sigmoid gates, 0/1 forward and soft backward (gating/straight_through.py)."""

    tau: float
    noise: float = 1.0
    generator: torch.Generator | None = field(default=None, compare=False)


HARD = Hard()
Mode = Hard | StraightThrough


@dataclass
class Masks:
    """[batch, n_gates] gate values (bool when hard; 0/1 floats with a soft gradient when straight-through)
    and, straight-through only, the keep probabilities sigmoid(logit) with the forced lists applied."""

    values: Tensor
    keep_prob: Tensor | None = None


class MaskPolicy:
    """Dense by default: every gate open. Subclasses decide differently; all share the forced lists."""

    reads_encoder = False  # whether `late` needs the encoder summary (else it gets None)
    reads_context = False  # whether the mask depends on the request at all

    def __init__(self, space: GateSpace, force_keep: list[int] = (), force_skip: list[int] = ()):
        self.space = space
        self.mode: Mode = HARD
        self.force_keep, self.force_skip = list(force_keep), list(force_skip)
        self._forced_index: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def reads(self, name: str) -> bool:
        """Whether the policy reads context input `name` (task, language, audio, a caller vector)."""
        return False

    @property
    def early_reads_context(self) -> bool:
        """Whether `early` reads the request's context. Where it does not, context that only `late` reads
        may be made later, next to the late stage (the runtime pools the audio inside the encoder's CUDA
        graph). A policy that reads context is assumed to read it early unless it says otherwise."""
        return self.reads_context

    def in_mode(self, mode: Mode) -> MaskPolicy:
        """The same policy (shared weights) deciding in `mode`."""
        other = copy.copy(self)
        other.mode = mode
        return other

    def early(self, ctx: GateContext) -> Masks:
        return Masks(self.forced(torch.ones(len(ctx.task), len(self.space), dtype=torch.bool)))

    def late(self, ctx: GateContext, summary: Tensor | None) -> Masks | None:
        """The late gates' values [batch, n_late]; None where the early mask already holds every gate."""
        return None

    def join(self, early: Masks, late: Masks | None) -> Masks:
        return early

    def forced(self, gates: Tensor) -> Tensor:
        """`gates` with the force-keep gates set to 1 and the force-skip gates to 0 (a new tensor).
        Index tensors are kept per device, so that this can run inside a captured CUDA graph."""
        if not self.force_keep and not self.force_skip:
            return gates
        if gates.device not in self._forced_index:
            with torch.inference_mode(False):  # normal tensors: training may reuse what inference cached
                self._forced_index[gates.device] = (
                    torch.tensor(self.force_keep, dtype=torch.long, device=gates.device),
                    torch.tensor(self.force_skip, dtype=torch.long, device=gates.device),
                )
        keep, skip = self._forced_index[gates.device]
        return gates.index_fill(1, keep, 1).index_fill(1, skip, 0)


class DenseMasks(MaskPolicy):
    """The dense model: no gate is ever closed."""


class RandomMasks(MaskPolicy):
    """The LayerDrop-style baseline: masks drawn per utterance from a seeded generator, context ignored.
    The whole mask is drawn at the early stage (one draw per batch, so a seed gives the same masks
    whatever the stage split); there is no late stage."""

    def __init__(self, gates: RandomGates):
        super().__init__(gates.space)
        self.gates = gates

    def early(self, ctx: GateContext) -> Masks:
        return Masks(self.gates.sample(len(ctx.task)))


class PredictedMasks(MaskPolicy):
    """Masks from a `GatePredictor`: early logits from the context, late logits from the context and
    the encoder summary."""

    def __init__(self, predictor: GatePredictor):
        super().__init__(predictor.space, predictor.force_keep, predictor.force_skip)
        self.predictor = predictor
        self.reads_encoder = "encoder" in predictor.config.context
        self.reads_context = bool(predictor.config.context)
        # host copies, so that deciding an early mask needs no device round trip
        self._early_index = predictor.early_index.cpu()
        self._late_index = predictor.late_index.cpu()
        self._early_open = set(self._early_index.tolist()) <= set(predictor.force_keep)

    def reads(self, name: str) -> bool:
        return name in self.predictor.config.context

    @property
    def early_reads_context(self) -> bool:
        """Hard masks whose early gates are all forced open predict nothing early (see `early`)."""
        return self.reads_context and not (self._early_open and isinstance(self.mode, Hard))

    def _gates(self, logits: Tensor) -> tuple[Tensor, Tensor | None]:
        if isinstance(self.mode, Hard):
            return inference_gates(logits), None
        m = self.mode
        return straight_through_gates(logits, m.tau, m.generator, m.noise), torch.sigmoid(logits)

    def early(self, ctx: GateContext) -> Masks:
        p, batch = self.predictor, len(ctx.task)
        if isinstance(self.mode, Hard):
            values = torch.ones(batch, len(self.space), dtype=torch.bool)
            if not self._early_open:  # else every early gate is forced open: nothing to predict
                with torch.inference_mode():
                    values[:, self._early_index] = inference_gates(p.early_logits(ctx)).cpu()
            return Masks(self.forced(values))
        device = p.early_head.weight.device
        with torch.autocast(device.type, enabled=False):  # gates in fp32: bf16 sigmoids saturate to 0/1
            gates, prob = self._gates(p.early_logits(ctx))
        ones = torch.ones(batch, len(self.space), device=device)
        values = ones.index_copy(1, p.early_index, gates)
        return Masks(self.forced(values), self.forced(ones.index_copy(1, p.early_index, prob)))

    def late(self, ctx: GateContext, summary: Tensor | None) -> Masks:
        device = self.predictor.late_head.weight.device
        ctx = GateContext(ctx.task, ctx.language, ctx.audio, summary, ctx.vectors)
        with torch.autocast(device.type, enabled=False):
            return Masks(*self._gates(self.predictor.late_logits(ctx)))

    def join(self, early: Masks, late: Masks | None) -> Masks:
        """The early masks with the late gates' values in place, forced lists applied. Hard masks are
        joined on the host (where the runtime reads them); straight-through ones where they live."""
        if late is None:
            return early
        if isinstance(self.mode, Hard):
            values = early.values.clone()
            values[:, self._late_index] = late.values.cpu()
            return Masks(self.forced(values))
        index = self.predictor.late_index
        values = early.values.index_copy(1, index, late.values)
        return Masks(self.forced(values), self.forced(early.keep_prob.index_copy(1, index, late.keep_prob)))


class StaticMasks(PredictedMasks):
    """A predictor that reads no context: one mask for every request. At inference it is decided once
    and kept until the predictor's logit shifts change (calibration moves them); in training it
    samples like any predictor."""

    def __init__(self, predictor: GatePredictor):
        super().__init__(predictor)
        self._constant: tuple[tuple | None, Tensor] | None = None  # (logit shift it was decided at, mask)

    def early(self, ctx: GateContext) -> Masks:
        if not isinstance(self.mode, Hard):
            return super().early(ctx)
        p = self.predictor
        shift = tuple(p.config.logit_shift) if p.config.logit_shift is not None else None
        if self._constant is None or self._constant[0] != shift:
            with torch.inference_mode():
                one = GateContext(task=ctx.task[:1], language=ctx.language[:1])
                mask = self.forced(inference_gates(p(one)))
            self._constant = (shift, mask.cpu())
        return Masks(self._constant[1].expand(len(ctx.task), -1).clone())

    def late(self, ctx: GateContext, summary: Tensor | None) -> Masks | None:
        return None if isinstance(self.mode, Hard) else super().late(ctx, summary)


def policy_for(predictor: GatePredictor) -> PredictedMasks:
    """A gate set's policy: static when its predictor reads no context, else predicted."""
    return PredictedMasks(predictor) if predictor.config.context else StaticMasks(predictor)


# The encoder stage of `two_stage`: given the early masks and the late stage as a function of the
# encoder output, run the encoder and return (its output, the late stage's result). The runtime may run
# the late stage inside the encoder's CUDA graph; training and calibration just call it after.
LateStage = Callable[[Tensor], "Masks | None"]
EncoderStage = Callable[[Masks, LateStage], "tuple[Tensor, Masks | None]"]


def two_stage(
    policy: MaskPolicy, ctx: GateContext, encode: EncoderStage, summarize: Callable[[Tensor], Tensor]
) -> tuple[Masks, Tensor]:
    """Early gates, the encoder under them, late gates (reading `summarize(encoder output)` if the
    policy needs it), joined: the full masks and the encoder output."""
    early = policy.early(ctx)

    def late(encoder_out: Tensor) -> Masks | None:
        return policy.late(ctx, summarize(encoder_out) if policy.reads_encoder else None)

    encoder_out, late_masks = encode(early, late)
    return policy.join(early, late_masks), encoder_out


def encoder_then_late(encoder: Callable[[Masks], Tensor]) -> EncoderStage:
    """The plain encoder stage: run `encoder(early)`, then the late stage on its output."""

    def encode(early: Masks, late: LateStage) -> tuple[Tensor, Masks | None]:
        encoder_out = encoder(early)
        return encoder_out, late(encoder_out)

    return encode
