"""Bench (issue 7, GPU part): HF `generate` against our runtime on the same adapted Whisper base, greedy,
batch 1, over a fixed mix of test rows (every task and language in turn); our runtime also with the
shipped decoder gate sets.

Variants run interleaved in a rotating order after warm-up rounds; each round decodes every row one at a
time, and the time per utterance (encoder and decoding) is that round's total over its rows. Reported:
median and quartiles over rounds, generated tokens per second, and for HF against our dense runtime the
share of rows whose greedy tokens are identical.

Usage: python bench/gpu_runtimes.py CORPUS [--rows 9] [--repeats 10] [--warmup 2] [--dtype fp16]
                                    [--device cuda] [--out results/gpu_runtimes.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import read_manifest
from ctxprune.eval.latency import mixed_rows
from ctxprune.eval.suite import device_name
from ctxprune.models.whisper_stack import load_stack
from ctxprune.paths import ARTIFACTS, SHIPPED_ADAPTER, write_json_atomic
from ctxprune.progress import progress_bar

GATE_SETS = [f"decoder-flops-{s}-{kind}" for s in ("0.3", "0.5", "0.7") for kind in ("context", "static")]
MAX_NEW_TOKENS = 96


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--rows", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("results/gpu_runtimes.json"))
    args = ap.parse_args()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    adapter = SHIPPED_ADAPTER
    rows = mixed_rows(read_manifest(args.corpus, "test"), args.rows)
    stacks = {"ours-dense": load_stack(None, adapter, None, args.device, dtype)}
    stacks |= {
        f"ours-{g}": load_stack(None, adapter, ARTIFACTS / "gates" / g, args.device, dtype) for g in GATE_SETS
    }
    hf = stacks["ours-dense"].loaded.model  # the same merged weights, called through upstream `generate`
    eot = hf.generation_config.eos_token_id
    inputs = []
    for e in rows:
        feats, frames = features_for([load_audio(args.corpus / e.audio)], hf.config.num_mel_bins)
        inputs.append((feats.to(args.device, dtype), frames, e.task, e.language))

    def run_hf(feats, frames, task, language) -> list[int]:
        with torch.inference_mode():
            out = hf.generate(
                feats,
                language=language,
                task=task,
                do_sample=False,
                num_beams=1,
                max_new_tokens=MAX_NEW_TOKENS,
            )[0].tolist()
        return out[: out.index(eot)] if eot in out else out

    def run_ours(name):
        pruned = stacks[name].pruned
        return lambda feats, frames, task, language: pruned.run(
            feats, frames, [task], [language], max_new_tokens=MAX_NEW_TOKENS
        ).tokens[0]

    variants = {"hf-generate-dense": run_hf} | {name: run_ours(name) for name in stacks}
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, list[list[int]]] = {}
    with progress_bar() as bar:
        task = bar.add_task("bench", total=(args.warmup + args.repeats) * len(names))
        for r in range(args.warmup + args.repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                _sync(args.device)
                start = time.perf_counter()
                outs = [variants[name](*x) for x in inputs]
                _sync(args.device)
                if r >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000 / len(inputs))
                    tokens[name] = outs
                bar.advance(task)
    dense = statistics.median(times["ours-dense"])
    results = []
    for name in names:
        t = sorted(times[name])
        median = statistics.median(t)
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0], t[0], t[0]]
        generated = sum(len(x) for x in tokens[name])
        results.append(
            {
                "name": name,
                "median_ms": median,
                "p25_ms": q[0],
                "p75_ms": q[2],
                "tokens": generated,
                "tokens_per_s": generated / (median * len(inputs) / 1000),
                "reduction_vs_ours_dense": 1 - median / dense,
            }
        )
    same = sum(a == b for a, b in zip(tokens["hf-generate-dense"], tokens["ours-dense"], strict=True))
    record = {
        "kind": "bench-runtimes",
        "device": device_name(args.device),
        "dtype": args.dtype,
        "batch": 1,
        "rows": len(inputs),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "max_new_tokens": MAX_NEW_TOKENS,
        "hf_equals_ours_dense_rows": same,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "results": results,
    }
    write_json_atomic(args.out, record)
    hf_tps = results[0]["tokens_per_s"]
    print(f"{'variant':34}{'median ms':>10}{'p25-p75':>14}{'tok/s':>8}{'vs HF':>7}{'vs dense':>9}")
    for r in results:
        spread = f"{r['p25_ms']:.0f}-{r['p75_ms']:.0f}"
        print(
            f"{r['name']:34}{r['median_ms']:10.1f}{spread:>14}{r['tokens_per_s']:8.0f}"
            f"{r['tokens_per_s'] / hf_tps:6.1f}x{-r['reduction_vs_ours_dense']:+9.1%}"
        )
    print(f"HF generate and ours (dense): identical tokens on {same}/{len(inputs)} rows; written {args.out}")


if __name__ == "__main__":
    main()
