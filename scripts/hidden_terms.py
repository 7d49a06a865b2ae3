"""Where a gate set's decoder departs from the dense teacher's, layer by layer: the distillation's
hidden-state term (normalized MSE, `train/distill.py`) of each decoder layer's output, the KL of the
tokens, and the share of rows that skip each layer whole, on a split's rows teacher-forced on their
references.

With `--decode`, the same transcription rows decoded greedily (dense first): WER with its substitutions,
deletions and insertions, to set what teacher forcing measures beside what decoding does.

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
from ctxprune.data.manifest import read_manifest
from ctxprune.errors import CtxpruneError
from ctxprune.eval.normalize import normalize
from ctxprune.gating.policy import encoder_then_late, two_stage
from ctxprune.gating.predictor import GateContext
from ctxprune.gating.skip import SoftGates
from ctxprune.models.whisper_context import pooled_encoder, pooled_log_mel
from ctxprune.paths import write_bytes_atomic
from ctxprune.progress import progress_bar
from ctxprune.stack import Stack, StackSpec, load_stack
from ctxprune.train.distill import hidden_loss, kl_loss
from ctxprune.train.objective import teacher_forced_logits


def first_rows(corpus: Path, split: str, per_group: int) -> list:
    """The first `per_group` rows of each (task, language) group, in manifest order."""
    taken: dict[tuple[str, str], int] = {}
    rows = []
    for example in read_manifest(corpus, split):
        key = (example.task, example.language)
        if taken.get(key, 0) < per_group:
            taken[key] = taken.get(key, 0) + 1
            rows.append(example)
    return rows


@torch.no_grad()
def layer_terms(stack: Stack, corpus: Path, examples: list, teacher, batch_size: int) -> dict:
    """Per task: each decoder layer's hidden term, the KL, and the share of rows skipping each layer."""
    student, policy, names = stack.gated, stack.pipeline.policy, stack.gated.gate_names
    tokens = stack.loaded.tokens
    collate = Collate(student.config.num_mel_bins, stack.loaded.tokenizer, tokens)
    sums: dict[str, dict] = {}
    layers = student.config.decoder_layers
    for start in range(0, len(examples), batch_size):
        batch = collate([(e, load_audio(corpus / e.audio)) for e in examples[start : start + batch_size]])
        feats, frames = batch["features"], batch["frames"]
        ctx = GateContext(batch["tasks"], batch["languages"], pooled_log_mel(feats, frames))
        encode = encoder_then_late(lambda early, f=feats: student.encode(f, SoftGates(early.values, names)))
        masks, encoder_out = two_stage(policy, ctx, encode, lambda out, f=frames: pooled_encoder(out, f))
        ids, labels = batch["decoder_input_ids"], batch["labels"]
        hidden_s, hidden_t = [], []
        logits_s = teacher_forced_logits(student, encoder_out, ids, SoftGates(masks.values, names), hidden_s)
        logits_t = teacher_forced_logits(teacher, teacher.encode(feats), ids, None, hidden_t)
        keep = masks.values.bool()
        for task in set(batch["tasks"]):
            rows = torch.tensor([t == task for t in batch["tasks"]])
            at = (labels != -100) & rows[:, None]
            empty = {"rows": 0, "kl": 0.0, "hidden": [0.0] * layers, "skipped": [0] * layers}
            entry = sums.setdefault(task, empty)
            n = int(rows.sum())
            entry["rows"] += n
            entry["kl"] += n * float(kl_loss(logits_s[rows], logits_t[rows], labels[rows], 2.0))
            for i in range(layers):
                entry["hidden"][i] += n * float(hidden_loss([hidden_s[i]], [hidden_t[i]], at))
                layer = [j for j, name in enumerate(names) if name.startswith(f"dec.{i}.")]
                entry["skipped"][i] += int((~keep[rows][:, layer].any(1)).sum())
    return {
        task: {
            "rows": e["rows"],
            "kl": e["kl"] / e["rows"],
            "hidden_per_layer": [h / e["rows"] for h in e["hidden"]],
            "skipped_whole_share": [s / e["rows"] for s in e["skipped"]],
        }
        for task, e in sums.items()
    }


@torch.no_grad()
def decoded_errors(stack: Stack, corpus: Path, examples: list, batch_size: int) -> dict:
    """Greedy decoding of the transcription rows: WER and the shares of reference words substituted,
    deleted (and of those, deleted at the end) and inserted, over all of them (Whisper's normalizer,
    then jiwer)."""
    rows = [e for e in examples if e.task == "transcribe"]
    counts = {"substitutions": 0, "deletions": 0, "insertions": 0, "words": 0, "deleted_at_end": 0}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        feats, frames = features_for([load_audio(corpus / e.audio) for e in batch])
        result = stack.pipeline.run(feats, frames, [e.task for e in batch], [e.language for e in batch])
        texts = stack.loaded.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        for e, text in zip(batch, texts, strict=True):
            ref, hyp = normalize(e.target, e.language), normalize(text, e.language)
            if not ref:
                continue
            out = jiwer.process_words(ref, hyp)
            counts["substitutions"] += out.substitutions
            counts["deletions"] += out.deletions
            counts["insertions"] += out.insertions
            counts["words"] += out.substitutions + out.deletions + out.hits
            counts["deleted_at_end"] += trailing_deletions(out.alignments[0])
    words = max(counts.pop("words"), 1)
    at_end = counts.pop("deleted_at_end") / words
    shares = {k: v / words for k, v in counts.items()}
    return {"wer": sum(shares.values()), **shares, "deletions_at_end": at_end, "rows": len(rows)}


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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        report(args)
    except CtxpruneError as e:
        sys.exit(f"error: {e}")


def report(args: argparse.Namespace) -> None:
    """Measure every gate set on the same rows, write the JSON and print one line per set and task."""
    torch.manual_seed(0)
    examples = first_rows(args.corpus, args.split, args.rows)
    dense = load_stack(StackSpec())
    results = {}
    decoded = {"dense": decoded_errors(dense, args.corpus, examples, args.batch_size)} if args.decode else {}
    with progress_bar() as bar:
        for gate_set in bar.track(args.gate_sets, description="gate sets"):
            stack = load_stack(StackSpec(gates=gate_set))
            results[gate_set.name] = layer_terms(stack, args.corpus, examples, dense.gated, args.batch_size)
            if args.decode:
                decoded[gate_set.name] = decoded_errors(stack, args.corpus, examples, args.batch_size)
    record = {"corpus": str(args.corpus), "split": args.split, "rows_per_group": args.rows, "sets": results}
    if decoded:
        record["decoded_transcription"] = decoded
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
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
