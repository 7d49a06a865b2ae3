"""What each gated module is worth: the dense model with exactly one module skipped, no retraining, on a
corpus split (WER per language, BLEU per direction, against the dense model on the same rows) and, where
Debian's pocketsphinx-testdata is installed, on the five real LibriVox clips.

This is the table issue 15 asks for before encoder gates: which modules have slack, which do not.

Usage: python bench/module_damage.py CORPUS [--split test] [--limit 20] [--device cuda] [--dtype fp16]
       [--gates enc.,dec.] [--out results/module_damage.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch
import transformers

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import read_manifest
from ctxprune.eval.librivox import LIBRIVOX_DIR, librivox_references, word_error_rate
from ctxprune.eval.quality import evaluate, limit_per_group
from ctxprune.eval.suite import device_name
from ctxprune.gating.policy import MaskPolicy
from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec, load_stack

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def librivox_wer(stack, options: DecodeOptions) -> float | None:
    if not LIBRIVOX_DIR.exists():
        return None
    refs = librivox_references()
    device, dtype = stack.gated.device, next(stack.gated.model.parameters()).dtype
    feats, frames = features_for([load_audio(p) for p in refs])
    result = stack.run(
        feats.to(device, dtype), frames, ["transcribe"] * len(refs), ["en"] * len(refs), options=options
    )
    texts = stack.loaded.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
    return word_error_rate(list(refs.values()), [t.strip() for t in texts])


def summary(groups: dict, dense: dict) -> dict:
    """Mean WER rise (points) over languages and mean BLEU drop over directions, against dense."""
    rises = [100 * (g["wer"] - dense[k]["wer"]) for k, g in groups.items() if "wer" in g]
    drops = [dense[k]["bleu"] - g["bleu"] for k, g in groups.items() if "bleu" in g]
    return {
        "wer_rise_points": round(statistics.mean(rises), 2) if rises else None,
        "bleu_drop": round(statistics.mean(drops), 2) if drops else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=20, help="rows per (task, language)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--gates", default="enc.,dec.", help="comma-separated name prefixes to test")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("results/module_damage.json"))
    args = parser.parse_args()
    dtype = DTYPES[args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")]
    stack = load_stack(StackSpec(device=args.device, dtype=dtype))
    space = stack.space
    examples = limit_per_group(read_manifest(args.corpus, args.split), args.limit)
    options = DecodeOptions(max_new_tokens=160)
    prefixes = tuple(p for p in args.gates.split(",") if p)
    names = [n for n in space.names if n.startswith(prefixes)]
    flops = dict(zip(space.names, space.weights(), strict=True))
    total = sum(flops.values()) + space.ungated.total(space.reference_tokens)

    def run(policy: MaskPolicy) -> dict:
        pipeline = stack.with_policy(policy).pipeline
        groups = evaluate(
            pipeline, stack.loaded.tokenizer, args.corpus, examples, args.batch_size, options=options
        )
        groups = {
            k: {m: v for m, v in g.items() if m in ("n", "wer", "cer", "bleu", "chrf")}
            for k, g in groups.items()
        }
        return {"groups": groups, "librivox_wer": librivox_wer(stack.with_policy(policy), options)}

    with progress_bar() as bar:
        task = bar.add_task("single-module skips", total=len(names) + 1)
        dense = run(MaskPolicy(space))
        bar.advance(task)
        rows = []
        for name in names:
            result = run(MaskPolicy(space, force_skip=[space.index(name)]))
            share = round(flops[name] / total, 4)
            rows.append(
                {"gate": name, "flops_share": share, **summary(result["groups"], dense["groups"]), **result}
            )
            bar.advance(task)
    record = {
        "corpus": str(args.corpus),
        "split": args.split,
        "rows_per_group": args.limit,
        "device": device_name(args.device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "dense": dense,
        "skips": rows,
    }
    write_json_atomic(args.out, record)
    print(f"{'gate':18} {'FLOPs':>6} {'WER +pts':>9} {'BLEU -':>7} {'LibriVox WER':>12}")
    lv = dense["librivox_wer"]
    print(f"{'(dense)':18} {'':>6} {'':>9} {'':>7} {lv if lv is None else round(lv, 3)!s:>12}")
    for r in rows:
        lv = r["librivox_wer"]
        print(
            f"{r['gate']:18} {r['flops_share']:6.3f} {r['wer_rise_points']!s:>9} {r['bleu_drop']!s:>7} "
            f"{lv if lv is None else round(lv, 3)!s:>12}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
