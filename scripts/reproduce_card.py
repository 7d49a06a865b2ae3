"""Re-evaluate a shipped artifact (the LoRA adapter or a gate set) on a corpus's dev split with the
settings its card was made with, and print the card's figures beside today's.

Usage: python scripts/reproduce_card.py ARTIFACT_DIR CORPUS_DIR [--out results.json]
(a gate set loads on top of artifacts/lora-adapter where it records that it was trained on it)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctxprune.data.manifest import read_manifest
from ctxprune.eval.quality import evaluate, limit_per_group
from ctxprune.paths import SHIPPED_ADAPTER, write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import BASE_ADAPTER, StackSpec, load_stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    card = json.loads((args.artifact / "card.json").read_text())
    if card["kind"] == "adapter":
        stack = load_stack(StackSpec(adapter=args.artifact))
    else:
        adapter = SHIPPED_ADAPTER if (args.artifact / BASE_ADAPTER).is_file() else None  # trained on it
        stack = load_stack(StackSpec(adapter=adapter, gates=args.artifact))
    examples = limit_per_group(read_manifest(args.corpus, "dev"), card["config"]["eval_limit"])
    with progress_bar() as bar:
        task = bar.add_task("dev", total=len(examples))
        results = evaluate(
            stack.pipeline, stack.loaded.tokenizer, args.corpus, examples,
            options=DecodeOptions(max_new_tokens=card["config"]["eval_max_tokens"]),
            on_progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    print(f"{'task/lang':<16}{'metric':<7}{'card':>8}{'now':>8}{'skip card':>11}{'skip now':>10}")
    for key, r in results.items():
        metric = "wer" if "wer" in r else "bleu"
        c = card["dev"][key]
        print(
            f"{key:<16}{metric:<7}{c[metric]:8.3f}{r[metric]:8.3f}"
            f"{c['sparsity_flops']:11.3f}{r['sparsity_flops']:10.3f}"
        )
    if args.out:
        record = {k: {m: v for m, v in r.items() if m != "keep_rate"} for k, r in results.items()}
        write_json_atomic(args.out, {"artifact": str(args.artifact), "card_dev": card["dev"], "now": record})


if __name__ == "__main__":
    main()
