"""Where a gate set's decoder departs from the dense teacher's, layer by layer: the distillation's
hidden-state term (normalized MSE, `train/distill.py`) of each decoder layer's output, the KL of the
tokens, and the share of rows that skip each layer whole, on a split's rows teacher-forced on their
references.

With `--decode`, the same transcription rows decoded greedily (dense first): WER with its substitutions,
deletions and insertions, to set what teacher forcing measures beside what decoding does.

With `--own`, the KL teacher-forced on the dense teacher's greedy outputs (what distillation trains on)
beside the KL on each set's own greedy outputs (what on-policy distillation, `onpolicy_every`, adds),
and how long its outputs are against the teacher's: how far the student strays where its own mistakes
lead it.

Why: the wider student (`+wide`) distills every decoder layer's output with the same weight. Where a
mask skips a layer whole, the student's output there is its input, so the term asks the layers that
run to produce several layers' outputs at once; this shows how much of the term such layers hold
(docs/training.md, "Twenty-third step": it is spread over all of them). Terms are means over
batches, weighted by their rows.

Usage: python scripts/hidden_terms.py CORPUS GATE_SET... --rows 10 --out hidden_terms.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jiwer
import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.dataset import Collate
from ctxprune.data.features import features_for
from ctxprune.errors import CtxpruneError
from ctxprune.eval.normalize import normalize
from ctxprune.eval.suite import eval_rows
from ctxprune.gating.policy import encoder_then_late, two_stage
from ctxprune.gating.predictor import GateContext
from ctxprune.gating.skip import SoftGates
from ctxprune.models.whisper_context import pooled_encoder, pooled_log_mel
from ctxprune.paths import write_bytes_atomic
from ctxprune.progress import progress_bar
from ctxprune.stack import Stack, StackSpec, load_stack
from ctxprune.train.distill import greedy_sequences, hidden_loss, kl_loss
from ctxprune.train.objective import teacher_forced_logits


@torch.no_grad()
def layer_terms(
    sets: dict[str, Stack], corpus: Path, examples: list, teacher: Stack, batch_size: int
) -> dict:
    """Per set and task: each decoder layer's hidden term, the KL, and the share of rows skipping each
    layer whole. Each batch is loaded and run through the teacher once, for every set."""
    names, layers = teacher.gated.gate_names, teacher.gated.config.decoder_layers
    in_layer = [[j for j, name in enumerate(names) if name.startswith(f"dec.{i}.")] for i in range(layers)]
    collate = Collate(teacher.gated.config.num_mel_bins, teacher.loaded.tokenizer, teacher.loaded.tokens)
    sums: dict[str, dict[str, dict]] = {name: {} for name in sets}
    for start in range(0, len(examples), batch_size):
        batch = collate([(e, load_audio(corpus / e.audio)) for e in examples[start : start + batch_size]])
        feats, frames, tasks = batch["features"], batch["frames"], batch["tasks"]
        ids, labels = batch["decoder_input_ids"], batch["labels"]
        hidden_t: list = []
        logits_t = teacher_forced_logits(teacher.gated, teacher.gated.encode(feats), ids, None, hidden_t)
        ctx = GateContext(tasks, batch["languages"], pooled_log_mel(feats, frames))
        for name, stack in sets.items():
            logits_s, hidden_s, keep = student_run(stack, ctx, feats, frames, ids)
            for task in set(tasks):
                rows = torch.tensor([t == task for t in tasks])
                at = (labels != -100) & rows[:, None]
                empty = {"rows": 0, "kl": 0.0, "hidden": [0.0] * layers, "skipped": [0] * layers}
                entry = sums[name].setdefault(task, empty)
                n = int(rows.sum())
                entry["rows"] += n
                entry["kl"] += n * float(kl_loss(logits_s[rows], logits_t[rows], labels[rows], 2.0))
                for i in range(layers):
                    entry["hidden"][i] += n * float(hidden_loss([hidden_s[i]], [hidden_t[i]], at))
                    entry["skipped"][i] += int((~keep[rows][:, in_layer[i]].any(1)).sum())
    return {
        name: {
            task: {
                "rows": e["rows"],
                "kl": e["kl"] / e["rows"],
                "hidden_per_layer": [h / e["rows"] for h in e["hidden"]],
                "skipped_whole_share": [s / e["rows"] for s in e["skipped"]],
            }
            for task, e in by_task.items()
        }
        for name, by_task in sums.items()
    }


def inference_masks(stack: Stack, ctx: GateContext, feats, frames) -> tuple:
    """A gate set's inference masks for a batch, and its encoder output under them."""
    student, names = stack.gated, stack.gated.gate_names
    encode = encoder_then_late(lambda early: student.encode(feats, SoftGates(early.values, names)))
    return two_stage(stack.pipeline.policy, ctx, encode, lambda o: pooled_encoder(o, frames))


def student_run(stack: Stack, ctx: GateContext, feats, frames, ids) -> tuple:
    """A gate set's logits and decoder layer outputs on `ids` under its inference masks, and the masks."""
    masks, out = inference_masks(stack, ctx, feats, frames)
    hidden: list = []
    gates = SoftGates(masks.values, stack.gated.gate_names)
    logits = teacher_forced_logits(stack.gated, out, ids, gates, hidden)
    return logits, hidden, masks.values.bool()


@torch.no_grad()
def own_output_terms(
    sets: dict[str, Stack], corpus: Path, examples: list, teacher: Stack, batch_size: int
) -> dict:
    """Per set and task: the KL teacher-forced on the dense teacher's greedy outputs (what distillation
    trains on) beside the KL on the set's own greedy outputs (what on-policy distillation adds), and
    the own outputs' length against the teacher's (tokens and end-of-text, each capped at 128), and
    the teacher's probability of end-of-text where the set's own outputs end (near 1: it would stop
    there too; low: the set ends early)."""
    t, special, cap = teacher.gated, teacher.loaded.tokens, 128
    keys = ("rows", "kl_t", "kl_own", "tokens_t", "tokens_own", "ends", "eot_p")
    sums: dict[str, dict[str, dict]] = {name: {} for name in sets}
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        feats, frames = features_for([load_audio(corpus / e.audio) for e in batch])
        tasks, languages = [e.task for e in batch], [e.language for e in batch]
        dense_out = t.encode(feats)
        every = torch.ones(len(batch), len(t.gate_names), dtype=torch.bool)
        ids_t, labels_t, _ = greedy_sequences(t, special, dense_out, every, languages, tasks, cap)
        logits_t = teacher_forced_logits(t, dense_out, ids_t)
        ctx = GateContext(tasks, languages, pooled_log_mel(feats, frames))
        for name, stack in sets.items():
            masks, out = inference_masks(stack, ctx, feats, frames)
            gates = SoftGates(masks.values, stack.gated.gate_names)
            ids_s, labels_s, _ = greedy_sequences(
                stack.gated, special, out, masks.values.bool(), languages, tasks, cap
            )
            on_teacher = teacher_forced_logits(stack.gated, out, ids_t, gates)
            on_own = teacher_forced_logits(stack.gated, out, ids_s, gates)
            teacher_on_own = teacher_forced_logits(t, dense_out, ids_s)
            for task in set(tasks):
                rows = torch.tensor([x == task for x in tasks])
                e = sums[name].setdefault(task, dict.fromkeys(keys, 0))
                n = int(rows.sum())
                e["rows"] += n
                e["kl_t"] += n * float(kl_loss(on_teacher[rows], logits_t[rows], labels_t[rows], 2.0))
                e["kl_own"] += n * float(kl_loss(on_own[rows], teacher_on_own[rows], labels_s[rows], 2.0))
                e["tokens_t"] += int((labels_t[rows] != -100).sum())
                e["tokens_own"] += int((labels_s[rows] != -100).sum())
                ends = (labels_s == special.eot) & rows[:, None]
                e["ends"] += int(ends.sum())
                e["eot_p"] += float(teacher_on_own[ends].float().softmax(-1)[:, special.eot].sum())
    return {
        name: {
            task: {
                "rows": e["rows"],
                "kl_on_teacher_outputs": e["kl_t"] / e["rows"],
                "kl_on_own_outputs": e["kl_own"] / e["rows"],
                "own_length_ratio": e["tokens_own"] / max(1, e["tokens_t"]),
                "teacher_eot_prob_at_own_end": e["eot_p"] / max(1, e["ends"]),
            }
            for task, e in by_task.items()
        }
        for name, by_task in sums.items()
    }


@torch.no_grad()
def decoded_errors(stacks: dict[str, Stack], corpus: Path, examples: list, batch_size: int) -> dict:
    """Per stack, greedy decoding of the transcription rows: WER and the shares of reference words
    substituted, deleted (and of those, deleted at the end) and inserted, over all of them (Whisper's
    normalizer, then jiwer). Each batch's audio is loaded once, for every stack."""
    rows = [e for e in examples if e.task == "transcribe"]
    keys = ("substitutions", "deletions", "insertions", "words", "deleted_at_end")
    counts = {name: dict.fromkeys(keys, 0) for name in stacks}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        feats, frames = features_for([load_audio(corpus / e.audio) for e in batch])
        refs = [normalize(e.target, e.language) for e in batch]
        for name, stack in stacks.items():
            result = stack.pipeline.run(feats, frames, [e.task for e in batch], [e.language for e in batch])
            texts = stack.loaded.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
            for e, ref, text in zip(batch, refs, texts, strict=True):
                if not ref:
                    continue
                out = jiwer.process_words(ref, normalize(text, e.language))
                c = counts[name]
                c["substitutions"] += out.substitutions
                c["deletions"] += out.deletions
                c["insertions"] += out.insertions
                c["words"] += out.substitutions + out.deletions + out.hits
                c["deleted_at_end"] += trailing_deletions(out.alignments[0])
    return {name: _shares(c, len(rows)) for name, c in counts.items()}


def _shares(counts: dict[str, int], rows: int) -> dict:
    words = max(counts["words"], 1)
    shares = {k: counts[k] / words for k in ("substitutions", "deletions", "insertions")}
    return {
        "wer": sum(shares.values()),
        **shares,
        "deletions_at_end": counts["deleted_at_end"] / words,
        "rows": rows,
    }


def trailing_deletions(alignment: list) -> int:
    """Reference words deleted after the last word the hypothesis matched or substituted: what an early
    end-of-text loses (the rest of the deletions are words skipped inside the sentence)."""
    spoken = [chunk.ref_end_idx for chunk in alignment if chunk.type != "delete"]
    end = max(spoken, default=0)
    return sum(
        c.ref_end_idx - c.ref_start_idx for c in alignment if c.type == "delete" and c.ref_start_idx >= end
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", type=Path)
    parser.add_argument("gate_sets", type=Path, nargs="+")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--rows", type=int, default=10, help="rows per task and language")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decode", action="store_true", help="also decode the transcription rows")
    parser.add_argument(
        "--own",
        action="store_true",
        help="also the KL on each set's own greedy outputs against the teacher's",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        report(args)
    except CtxpruneError as e:
        sys.exit(f"error: {e}")


def report(args: argparse.Namespace) -> None:
    """Measure every gate set on the same rows, write the JSON and print one line per set and task."""
    torch.manual_seed(0)
    examples = eval_rows(args.corpus, args.split, args.rows)
    dense = load_stack(StackSpec())
    with progress_bar() as bar:
        sets = {
            g.name: load_stack(StackSpec(gates=g)) for g in bar.track(args.gate_sets, description="loading")
        }
    results = layer_terms(sets, args.corpus, examples, dense, args.batch_size)
    decoded = (
        decoded_errors({"dense": dense} | sets, args.corpus, examples, args.batch_size) if args.decode else {}
    )
    own = own_output_terms(sets, args.corpus, examples, dense, args.batch_size) if args.own else {}
    record = {"corpus": str(args.corpus), "split": args.split, "rows_per_group": args.rows, "sets": results}
    if decoded:
        record["decoded_transcription"] = decoded
    if own:
        record["own_outputs"] = own
    write_bytes_atomic(args.out, json.dumps(record, indent=1).encode())
    for name, tasks in results.items():
        for task, e in sorted(tasks.items()):
            hidden = " ".join(f"{h:.3f}" for h in e["hidden_per_layer"])
            skipped = " ".join(f"{s:.2f}" for s in e["skipped_whole_share"])
            print(f"{name} {task}: KL {e['kl']:.3f}; hidden by layer {hidden}; skipped whole {skipped}")
    for name, d in decoded.items():
        print(
            f"{name} decoded ({d['rows']} transcription rows): WER {d['wer']:.3f} = substitutions "
            f"{d['substitutions']:.3f} + deletions {d['deletions']:.3f} "
            f"({d['deletions_at_end']:.3f} at the end) + insertions {d['insertions']:.3f}"
        )
    for name, tasks in own.items():
        for task, e in sorted(tasks.items()):
            print(
                f"{name} {task}: KL on the teacher's outputs {e['kl_on_teacher_outputs']:.3f}, on its own "
                f"{e['kl_on_own_outputs']:.3f}; own length / teacher's {e['own_length_ratio']:.3f}; "
                f"teacher's end-of-text probability where it ends {e['teacher_eot_prob_at_own_end']:.3f}"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
