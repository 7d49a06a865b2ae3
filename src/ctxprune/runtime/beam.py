"""Beam search over gated Whisper, step for step the algorithm of HF `generate(num_beams=K)`.

Per row, the K running beams propose their top 2K continuations by accumulated log-probability
(log-softmax over the whole vocabulary, then Whisper's suppressed tokens at -inf, as HF's processors
do). Continuations that end (end-of-text, or the length limit) compete for the K finished slots with
score `sum log p / generated_length ** length_penalty`; the best K others run on. A row stops when no
running beam can beat its worst finished one at the current length (HF's `early_stopping=False`
heuristic). Every beam of a row shares the row's mask, so reordering never crosses masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.steps import Steps
from ctxprune.runtime.suppression import Suppression
from ctxprune.runtime.timestamps import TimestampRules, sot_index

NEG = -1.0e9  # HF's "never pick this" score


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """x [rows, n, ...] gathered along dim 1 by index [rows, m]."""
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


@torch.inference_mode()
def beam_search(
    steps: Steps,
    prompts: Tensor,
    special: WhisperTokens,
    max_new_tokens: int,
    beams: int = 5,
    length_penalty: float = 1.0,
    min_new_tokens: int = 0,
    scores: bool = False,
    timestamps: bool = False,
) -> tuple[list[list[int]], list[tuple[float, int, float]]]:
    """Best finished hypothesis per row, and per row (its score times its length ** length_penalty, its
    length with end-of-text, the no-speech probability), so that score = sum / length as HF's
    `sequences_scores`. `prompts` is [rows * beams, P] and `steps` runs that many rows (each row repeated
    `beams` times in a block). With `scores` the no-speech probability is kept; with `timestamps` every beam
    follows Whisper's timestamp rules too, applied to the log-probabilities as HF's processors are."""
    rows = prompts.shape[0] // beams
    logits = steps.prompt(prompts)
    device, vocab = logits.device, logits.shape[-1]
    suppress = Suppression(special, vocab, device, min_new_tokens)
    rules = None
    if scores or timestamps:
        rules = TimestampRules(special, vocab, len(prompts), device, apply=timestamps)
        rules.reset(steps.prompt_logits[:, sot_index(prompts.shape[1], timestamps)])
    keep = 2 * beams  # as HF with one end-of-text token: enough to run on when K of them end
    top_slots = torch.arange(keep, device=device) < beams
    running = torch.full((rows, beams, max_new_tokens), special.eot, dtype=torch.long, device=device)
    finished = running.clone()
    running_scores = torch.zeros(rows, beams, device=device)
    running_scores[:, 1:] = NEG  # all beams start identical: only the first proposes
    finished_scores = torch.full((rows, beams), NEG, device=device)
    is_finished = torch.zeros(rows, beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(rows, 1, dtype=torch.bool, device=device)
    row_offset = (torch.arange(rows, device=device) * beams)[:, None]

    for t in range(max_new_tokens):
        if t > 0:
            logits = steps.step(running[:, :, t - 1].reshape(-1))
        log_probs = torch.log_softmax(logits.float(), -1) + suppress.bias(t)
        if rules is not None:
            log_probs = rules(log_probs, first=t == 0)
        totals = (log_probs.view(rows, beams, vocab) + running_scores[..., None]).view(rows, -1)
        cand_scores, cand_index = totals.topk(keep)
        source, token = cand_index // vocab, cand_index % vocab
        cand = _gather(running, source)
        cand[:, :, t] = token
        ends = token == special.eot
        if t == max_new_tokens - 1:
            ends = torch.ones_like(ends)

        # the best K candidates that have not ended run on
        alive_scores = cand_scores + ends.float() * NEG
        pick = alive_scores.topk(beams).indices
        running, running_scores = _gather(cand, pick), _gather(alive_scores, pick)
        parents = (row_offset + _gather(source, pick)).view(-1)
        steps.reorder(parents)
        if rules is not None:
            rules.reorder(parents)
            rules.advance(running[:, :, t].reshape(-1))

        # ended candidates among the top K compete for the finished slots
        just_ended = ends & top_slots
        ended_scores = cand_scores / ((t + 1) ** length_penalty)
        ended_scores = ended_scores + (~can_improve).float() * NEG + (~just_ended).float() * NEG
        merged_scores = torch.cat((finished_scores, ended_scores), 1)
        best = merged_scores.topk(beams).indices
        finished = _gather(torch.cat((finished, cand), 1), best)
        finished_scores = _gather(merged_scores, best)
        is_finished = _gather(torch.cat((is_finished, just_ended), 1), best)

        best_running = running_scores[:, :1] / ((t + 1) ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(1, keepdim=True).values, NEG)
        can_improve &= (best_running > worst_finished).any(-1, keepdim=True)
        if not bool(can_improve.any()) or bool(ends.all()):
            break

    tokens = [special.until_end(row) for row in finished[:, 0].tolist()]
    no_speech = rules.no_speech_prob[::beams].tolist() if rules is not None else [0.0] * rows
    out = []
    for row, score, p in zip(tokens, finished_scores[:, 0].tolist(), no_speech, strict=True):
        length = min(len(row) + 1, max_new_tokens)
        out.append((score * length**length_penalty, length, p))
    return tokens, out
