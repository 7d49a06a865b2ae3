"""Self-distillation: the gated student learns to do what the dense teacher does.

The teacher is the same weights with every gate open and no gate LoRA, run without gradient. The
student sees up to three kinds of token sequences per batch: the teacher's own greedy output for every
row (pseudo-labels, `data/pseudo_labels.py`); on on-policy steps its own greedy output under the masks
it trains with (`onpolicy_every`: teacher-forced on the teacher's outputs it never meets the prefixes its
own mistakes make, and the 0.7 latency students' extra errors were deletions, docs/training.md); and
the reference where a row has one. On all of them it matches the
teacher's token distributions (KL at temperature T, scaled by T^2 so that its gradient does not shrink
with T); on references it may also learn the labels (cross-entropy); optionally its decoder layers'
outputs, and its encoder output when encoder gates train, follow the teacher's (MSE normalized by the
teacher's variance, so every layer weighs alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from ctxprune.data.dataset import shifted_sequences
from ctxprune.gating.skip import MaskPlan, SoftGates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.greedy import greedy_decode
from ctxprune.train.objective import teacher_forced_logits


@dataclass(frozen=True)
class DistillWeights:
    kl: float = 1.0
    label: float = 0.0
    hidden: float = 0.0
    temperature: float = 2.0


def kl_loss(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(teacher || student), averaged over the target positions (labels != -100)."""
    keep = labels != -100
    s = (student[keep].float() / temperature).log_softmax(-1)
    t = (teacher[keep].float() / temperature).log_softmax(-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def hidden_loss(student: list[Tensor], teacher: list[Tensor], keep: Tensor | None = None) -> Tensor:
    """Mean over layers of MSE(student, teacher) / var(teacher), at the `keep` positions if given."""
    terms = []
    for s, t in zip(student, teacher, strict=True):
        s, t = (s[keep], t[keep]) if keep is not None else (s, t)
        t = t.float()
        terms.append(F.mse_loss(s.float(), t) / t.var().clamp_min(1e-6))
    return torch.stack(terms).mean()


def greedy_sequences(
    gw: GatedWhisper,
    special: WhisperTokens,
    encoder_out: Tensor,
    keep: Tensor,
    languages: list[str],
    tasks: list[str],
    max_new_tokens: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Each row decoded greedily (eagerly) under its hard mask `keep` ([rows, gates], True = run), as
    teacher-forcing inputs and labels (end-of-text where a row ended within `max_new_tokens`), and
    which rows ended: the student's own outputs of on-policy distillation (dense: `keep` all True)."""
    prompts = [special.prompt(lang, task) for lang, task in zip(languages, tasks, strict=True)]
    plan = MaskPlan(keep, gw.gate_names, encoder_out.device)
    tokens = greedy_decode(gw, encoder_out, torch.tensor(prompts), special, plan, max_new_tokens)
    ended = [len(t) < max_new_tokens for t in tokens]
    bodies = [t + [special.eot] if done else t for t, done in zip(tokens, ended, strict=True)]
    ids, labels = shifted_sequences(list(zip(prompts, bodies, strict=True)), special.eot)
    return ids, labels, torch.tensor(ended)


# where a joined sequence comes from (`join_sequences`)
PSEUDO_LABEL, OWN_OUTPUT, REFERENCE = 0, 1, 2


def join_sequences(batch: dict, with_references: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pseudo-label rows for every utterance, then the student's own outputs where the batch has them
    (`own_input_ids`: on-policy steps, train/gates.py), then reference rows for those that have one,
    padded to one width: (input ids, labels, the utterance of each row, where each row comes from)."""
    n = batch["teacher_input_ids"].shape[0]
    parts = [(batch["teacher_input_ids"], batch["teacher_labels"], torch.arange(n), PSEUDO_LABEL)]
    if "own_input_ids" in batch:
        parts.append((batch["own_input_ids"], batch["own_labels"], torch.arange(n), OWN_OUTPUT))
    if with_references:
        has_ref = (batch["labels"] != -100).any(1)
        ref = (batch["decoder_input_ids"][has_ref], batch["labels"][has_ref], has_ref.nonzero().flatten())
        parts.append((*ref, REFERENCE))
    width = max(ids.shape[1] for ids, *_ in parts)
    # padding positions come after every target and carry no label: causal attention never sees them
    ids = torch.cat([F.pad(ids, (0, width - ids.shape[1])) for ids, *_ in parts])
    labels = torch.cat([F.pad(lab, (0, width - lab.shape[1]), value=-100) for _, lab, *_ in parts])
    utterance = torch.cat([rows for *_, rows, _ in parts])
    source = torch.cat([torch.full((len(rows),), kind) for *_, rows, kind in parts])
    return ids, labels, utterance, source


def distillation_loss(
    gw: GatedWhisper,
    batch: dict,
    student_encoder: Tensor,
    teacher_encoder: Callable[[], Tensor],
    keep: Tensor,
    weights: DistillWeights,
    teacher_mode: Callable,
) -> tuple[Tensor, dict[str, float]]:
    """The weighted sum of the KL, label and hidden terms, and each term for the log.

    `keep` is the student's [batch, gates] straight-through mask; `teacher_encoder()` gives the dense
    encoder output (the student's own, when the encoder is neither gated nor adapted); `teacher_mode()`
    is a context in which the model runs as the teacher (the gate LoRA disabled)."""
    device = student_encoder.device
    with_refs = bool((batch["labels"] != -100).any())
    ids, labels, utterance, source = (t.to(device) for t in join_sequences(batch, with_refs))
    gates = SoftGates(keep.index_select(0, utterance), gw.gate_names)
    student_hidden: list[Tensor] | None = [] if weights.hidden else None
    with record_function("phase: student decoder"):
        student = teacher_forced_logits(gw, student_encoder, ids, gates, student_hidden, utterance)
    with torch.no_grad(), teacher_mode(), record_function("phase: teacher"):
        dense_encoder = teacher_encoder()
        teacher_hidden: list[Tensor] | None = [] if weights.hidden else None
        teacher = teacher_forced_logits(gw, dense_encoder, ids, None, teacher_hidden, utterance)
    with record_function("phase: KL"):
        terms = {"kl": kl_loss(student, teacher, labels, weights.temperature)}
        own = labels.masked_fill((source != OWN_OUTPUT)[:, None], -100)
        if (own != -100).any():  # for the log: how far the student is from the teacher on its own outputs
            with torch.no_grad():
                terms["kl_own"] = kl_loss(student.detach(), teacher, own, weights.temperature)
    if weights.label and with_refs:
        ref = labels.masked_fill((source != REFERENCE)[:, None], -100)
        terms["label_ce"] = F.cross_entropy(student.float().flatten(0, 1), ref.flatten(), ignore_index=-100)
    if weights.hidden:
        layers = hidden_loss(student_hidden, teacher_hidden, labels != -100)
        if student_encoder.requires_grad:  # the encoder is gated or adapted: it learns the teacher's too
            layers = (layers + hidden_loss([student_encoder], [dense_encoder])) / 2
        terms["hidden"] = layers
    total = (
        weights.kl * terms["kl"]
        + weights.label * terms.get("label_ce", 0.0)
        + weights.hidden * terms.get("hidden", 0.0)
    )
    return total, {k: float(v.detach()) for k, v in terms.items()}
