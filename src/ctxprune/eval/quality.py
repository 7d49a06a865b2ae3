"""Decode a manifest split with a (possibly pruned) model and score it per (task, language)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable

import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import Example
from ctxprune.data.speaker import context_vectors
from ctxprune.errors import CtxpruneError
from ctxprune.eval.metrics import asr_row_stats, asr_scores, bleu_row_stats, translation_scores
from ctxprune.gating.sparsity import gate_weights
from ctxprune.runtime.decoding import GREEDY, DecodeOptions
from ctxprune.runtime.pipeline import Pipeline


def limit_per_group(examples: list[Example], limit: int | None) -> list[Example]:
    """The first `limit` rows of each (task, language), in manifest order."""
    if limit is None:
        return examples
    seen: dict[tuple[str, str], int] = defaultdict(int)
    out = []
    for e in examples:
        if seen[(e.task, e.language)] < limit:
            seen[(e.task, e.language)] += 1
            out.append(e)
    return out


def only_groups(examples: list[Example], groups: list[str] | None) -> list[Example]:
    """The rows of the named "task/language" groups (all rows for None), in manifest order; a group the
    rows lack is an error, so that a typo does not evaluate nothing."""
    if not groups:
        return examples
    present = sorted({f"{e.task}/{e.language}" for e in examples})
    missing = [g for g in groups if g not in present]
    if missing:
        raise CtxpruneError(f"no rows for group {', '.join(missing)}; the split has {', '.join(present)}")
    return [e for e in examples if f"{e.task}/{e.language}" in groups]


def group_batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    """Batches that each hold one (task, language), so batch-level measurements belong to one group."""
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for e in examples:
        groups[(e.task, e.language)].append(e)
    return [
        rows[i : i + batch_size]
        for _, rows in sorted(groups.items())
        for i in range(0, len(rows), batch_size)
    ]


@torch.inference_mode()
def evaluate(
    pipeline: Pipeline,
    tokenizer,
    corpus,
    examples: list[Example],
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
    options: DecodeOptions = GREEDY,
) -> dict:
    """Per (task, language): WER/CER or BLEU/chrF, the share of rows whose decode hit the length cap
    (`capped`: no end-of-text, a repetition loop as a rule), the mean share of gates skipped (by count
    and by FLOPs), and each gate's keep rate; with `options.count_flops`, the executed GFLOPs per utterance of
    the encoder and decoder phases, measured by FlopCounterMode (each batch holds one group); with
    `options.loop_guard`, the shares of rows whose answer the guard stopped (`looped`) and of rows the
    dense teacher decoded again (`fallback`, whose cost the GFLOPs include); each row's metric statistics
    (`row_stats`, in manifest order) and a digest of the row ids (`rows_digest`), so that two candidates'
    rows can be paired for a confidence interval (`eval/significance.py`)."""
    ids: dict[tuple[str, str], list[str]] = defaultdict(list)
    hyps: dict[tuple[str, str], list[str]] = defaultdict(list)
    refs: dict[tuple[str, str], list[str]] = defaultdict(list)
    masks: dict[tuple[str, str], list[torch.Tensor]] = defaultdict(list)
    flops: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    capped: dict[tuple[str, str], int] = defaultdict(int)  # rows that hit the length cap (loops, mostly)
    looped: dict[tuple[str, str], int] = defaultdict(int)  # with the loop guard: answers it stopped
    fallback: dict[tuple[str, str], int] = defaultdict(int)  # with the loop guard: rows decoded again
    gw = pipeline.gw
    device, dtype = gw.device, next(gw.model.parameters()).dtype
    for batch in group_batches(examples, batch_size):
        chunks = [load_audio(corpus / e.audio) for e in batch]
        feats, frames = features_for(chunks, gw.config.num_mel_bins)
        tasks, languages = [e.task for e in batch], [e.language for e in batch]
        vectors = context_vectors(pipeline.policy.reads, chunks)
        result = pipeline.run(feats.to(device, dtype), frames, tasks, languages, vectors, options=options)
        if options.count_flops:
            group = flops[(batch[0].task, batch[0].language)]
            group[0] += result.flops_encoder
            group[1] += result.flops_decoder
        texts = tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        stopped = result.looped or [False] * len(batch)
        again = result.fallback or [None] * len(batch)
        for e, text, mask, row, hit, first in zip(
            batch, texts, result.mask, result.tokens, stopped, again, strict=True
        ):
            capped[(e.task, e.language)] += len(row) >= options.max_new_tokens
            looped[(e.task, e.language)] += hit
            fallback[(e.task, e.language)] += first is not None
            ids[(e.task, e.language)].append(e.id)
            hyps[(e.task, e.language)].append(text.strip())
            refs[(e.task, e.language)].append(e.target)
            masks[(e.task, e.language)].append(mask)
        if on_progress:
            on_progress(len(batch))
    space = pipeline.space
    by_flops, by_count = gate_weights(space, "flops"), gate_weights(space, "count")
    out = {}
    for key in sorted(hyps):
        task, language = key
        if task == "transcribe":
            scores = asr_scores(refs[key], hyps[key], language)
            rows = asr_row_stats(refs[key], hyps[key], language)
        else:
            scores = translation_scores(refs[key], hyps[key])
            rows = bleu_row_stats(refs[key], hyps[key])
        keep = torch.stack(masks[key]).float()
        out[f"{task}/{language}"] = {
            **scores,
            "n": len(hyps[key]),
            "capped": capped[key] / len(hyps[key]),
            **(
                {"looped": looped[key] / len(hyps[key]), "fallback": fallback[key] / len(hyps[key])}
                if options.loop_guard
                else {}
            ),
            **(
                {
                    "gflops_encoder": flops[key][0] / len(hyps[key]) / 1e9,
                    "gflops_decoder": flops[key][1] / len(hyps[key]) / 1e9,
                }
                if options.count_flops
                else {}
            ),
            "sparsity_flops": float(((1 - keep) * by_flops).sum(-1).mean() / by_flops.sum()),
            "sparsity_count": float(((1 - keep) * by_count).sum(-1).mean() / by_count.sum()),
            "keep_rate": dict(zip(space.names, keep.mean(0).tolist(), strict=True)),
            "rows_digest": rows_digest(ids[key]),
            "row_stats": rows,
        }
    return out


def rows_digest(ids: list[str]) -> str:
    """A short fingerprint of which rows, in which order, a group's statistics are about."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
