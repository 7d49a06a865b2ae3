"""Whisper base on a corpus's held-out splits, per voice family and (language, task): WER (and CER) of
transcription, BLEU (and chrF) of translation to English, with the base model alone (no adapter) unless
`--adapter` is given. Judges issue 14's goals: WER <= 0.10 for every language on the Pico rows, and
BLEU >= 25 for every translation direction (on the Pico rows and on all rows).

Usage: python bench/voice_quality.py CORPUS [--splits test test_unseen_voice] [--device cuda]
       [--dtype fp16] [--out results/voice_quality.json]
"""

from __future__ import annotations

import argparse
import platform
from collections import defaultdict
from pathlib import Path

import torch
import transformers

from ctxprune.data.manifest import read_manifest
from ctxprune.data.voices import FAMILIES
from ctxprune.eval.quality import evaluate
from ctxprune.eval.suite import device_name
from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec, load_stack

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
WER_GOAL, BLEU_GOAL = 0.10, 25.0


def goals(splits: dict) -> list[dict]:
    """Each goal per split and language (or direction): its figure and whether it is met."""
    out = []
    for split, families in splits.items():
        for key, group in families.get("pico", {}).items():
            task, language = key.split("/")
            metric, goal = ("wer", WER_GOAL) if task == "transcribe" else ("bleu", BLEU_GOAL)
            value = group[metric]
            met = value <= goal if metric == "wer" else value >= goal
            out.append({"split": split, "rows": "pico", "key": key, metric: value, "goal": goal, "met": met})
        pooled: dict[str, list] = defaultdict(list)  # translation over every family, weighted by rows
        for groups in families.values():
            for key, group in groups.items():
                if key.startswith("translate/"):
                    pooled[key].append((group["n"], group["bleu"]))
        for key, parts in sorted(pooled.items()):
            bleu = sum(n * b for n, b in parts) / sum(n for n, _ in parts)
            out.append(
                {
                    "split": split,
                    "rows": "all",
                    "key": key,
                    "bleu": bleu,
                    "goal": BLEU_GOAL,
                    "met": bleu >= BLEU_GOAL,
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--splits", nargs="+", default=["test", "test_unseen_voice"])
    ap.add_argument(
        "--adapter", type=Path, default=None, help="a LoRA adapter; default: the base model alone"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="rows per (split, family) at most")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    dtype = DTYPES[args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")]
    stack = load_stack(StackSpec(adapter=args.adapter, device=args.device, dtype=dtype))
    subsets = {}
    for split in args.splits:
        rows = read_manifest(args.corpus, split)
        for family in FAMILIES:
            subset = [e for e in rows if e.family == family][: args.limit]
            if subset:
                subsets[(split, family)] = subset
    results: dict[str, dict] = defaultdict(dict)
    with progress_bar() as bar:
        task = bar.add_task("decoding", total=sum(map(len, subsets.values())))
        for (split, family), subset in subsets.items():
            results[split][family] = evaluate(
                stack.pipeline, stack.loaded.tokenizer, args.corpus, subset, args.batch_size,
                lambda n: bar.advance(task, n), DecodeOptions(),
            )  # fmt: skip
    for families in results.values():
        for groups in families.values():
            for group in groups.values():
                for key in ("keep_rate", "sparsity_flops", "sparsity_count"):
                    group.pop(key)  # the dense model: nothing skipped
    judged = goals(results)
    record = {
        "kind": "voice-quality",
        "corpus": str(args.corpus),
        "adapter": str(args.adapter) if args.adapter else None,
        "device": device_name(args.device),
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "splits": results,
        "goals": judged,
    }
    print(f"{'split':<18}{'family':<8}{'task/lang':<16}{'rows':>5}{'WER':>7}{'CER':>7}{'BLEU':>7}{'chrF':>7}")
    for split, families in results.items():
        for family, groups in families.items():
            for key, g in groups.items():
                cells = [
                    f"{g[m]:7.3f}"
                    if m in g and m in ("wer", "cer")
                    else f"{g[m]:7.1f}"
                    if m in g
                    else f"{'':7}"
                    for m in ("wer", "cer", "bleu", "chrf")
                ]
                print(f"{split:<18}{family:<8}{key:<16}{g['n']:>5}" + "".join(cells))
    met = sum(g["met"] for g in judged)
    print(
        f"goals met: {met} of {len(judged)}; not met: "
        + ", ".join(f"{g['split']} {g['rows']} {g['key']}" for g in judged if not g["met"])
    )
    if args.out:
        write_json_atomic(args.out, record)


if __name__ == "__main__":
    main()
