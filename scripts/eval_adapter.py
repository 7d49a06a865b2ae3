"""Re-evaluate a shipped LoRA adapter on a corpus's dev split and compare with its card.

Usage: python scripts/eval_adapter.py ADAPTER_DIR CORPUS_DIR [--limit 50] [--out results.json]
(The `ctxprune eval` command of the evaluation issue will replace this script.)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ctxprune import assets
from ctxprune.data.manifest import read_manifest
from ctxprune.eval.quality import evaluate, limit_per_group
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_pruning import PrunedWhisper
from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.train.adapt import load_adapter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter", type=Path)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    loaded = assets.load()
    peft = load_adapter(loaded.model, args.adapter)
    gw = GatedWhisper(peft.base_model.model)
    examples = limit_per_group(read_manifest(args.corpus, "dev"), args.limit)
    with progress_bar() as bar, torch.inference_mode():
        task = bar.add_task("dev", total=len(examples))
        results = evaluate(
            PrunedWhisper(gw, loaded.tokens), loaded.tokenizer, args.corpus, examples,
            on_progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    card = json.loads((args.adapter / "card.json").read_text())
    print(f"{'task/lang':<16}{'metric':<7}{'card':>8}{'now':>8}")
    for key, r in results.items():
        metric = "wer" if "wer" in r else "bleu"
        print(f"{key:<16}{metric:<7}{card['dev'][key][metric]:8.3f}{r[metric]:8.3f}")
    if args.out:
        write_json_atomic(
            args.out, {k: {m: v for m, v in r.items() if m != "keep_rate"} for k, r in results.items()}
        )


if __name__ == "__main__":
    main()
