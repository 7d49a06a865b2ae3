"""Bench: what gating itself costs. Writes JSON; see docs/performance.md.

1. Predictor FLOPs against the base model's FLOPs for one utterance (both by `FlopCounterMode`).
2. CPU wall-clock at batch 1 on a real LibriVox clip, variants interleaved after warm-up:
   - `dense`: the runtime with no gates at all;
   - `all_open`: a real predictor runs, every gate is open (the overhead of gating: prediction,
     mask plans, branch dispatch). Both decode the same tokens, so the times are comparable.
Savings from pruning are measured at equal decode length by the runtime benchmarks, not here.
Usage: python bench/gating_overhead.py [--repeats 10] [--warmup 2] [--threads 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from ctxprune import assets
from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.eval.librivox import LIBRIVOX_DIR
from ctxprune.gating.policy import DenseMasks, policy_for
from ctxprune.gating.predictor import GateContext, GatePredictor
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_context import pooled_log_mel, whisper_predictor_config
from ctxprune.models.whisper_costs import count_flops, whisper_gate_space
from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.runtime.pipeline import Pipeline


def _predictor(gw: GatedWhisper, space) -> GatePredictor:
    config = whisper_predictor_config(gw.config, space, ["en", "de"])
    return GatePredictor(config).eval()  # untrained: every logit starts at +3, so every gate is open


def _summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4)
    return {
        "median_s": statistics.median(times),
        "p25_s": q[0],
        "p75_s": q[2],
        "min_s": min(times),
        "max_s": max(times),
        "runs_s": times,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/gating_overhead.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    loaded = assets.load()
    gw = GatedWhisper(loaded.model)
    space = whisper_gate_space(gw)
    dense = Pipeline(gw, loaded.tokens, DenseMasks(space))
    predictor = _predictor(gw, space)
    variants = {"dense": dense, "all_open": Pipeline(gw, loaded.tokens, policy_for(predictor))}
    clip = sorted(LIBRIVOX_DIR.glob("*.wav"))[0]
    feats, frames = features_for([load_audio(clip)])

    # 1. FLOPs: predictor against one dense utterance, both measured.
    ctx = GateContext(
        ["transcribe"], ["en"], pooled_log_mel(feats, frames), torch.zeros(1, gw.config.d_model)
    )
    predictor_flops = count_flops(lambda: predictor(ctx))
    out = dense.run(feats, frames, ["transcribe"], ["en"])
    n_tokens = len(out.tokens[0]) + 1
    model_flops = count_flops(lambda: dense.run(feats, frames, ["transcribe"], ["en"]))

    # 2. Wall-clock, interleaved.
    times: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, list[int]] = {}
    with progress_bar() as bar:
        task = bar.add_task("timing", total=(args.warmup + args.repeats) * len(variants))
        for rep in range(args.warmup + args.repeats):
            for name, pw in variants.items():
                t0 = time.perf_counter()
                result = pw.run(feats, frames, ["transcribe"], ["en"])
                elapsed = time.perf_counter() - t0
                tokens[name] = result.tokens[0]
                if rep >= args.warmup:
                    times[name].append(elapsed)
                bar.advance(task)

    summary = {k: _summary(v) for k, v in times.items()}
    med = {k: v["median_s"] for k, v in summary.items()}
    report = {
        "bench": "gating_overhead",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "settings": {
            "clip": clip.name,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "decoded_tokens": n_tokens,
        },
        "flops": {
            "predictor": predictor_flops,
            "model_utterance": model_flops,
            "predictor_share": predictor_flops / model_flops,
        },
        "latency": summary,
        "gating_overhead_all_open": med["all_open"] / med["dense"] - 1,
        "decoded_tokens": {k: len(v) + 1 for k, v in tokens.items()},
        "same_tokens_all_open": tokens["all_open"] == tokens["dense"],
    }
    write_json_atomic(args.out, report)
    share = 100 * report["flops"]["predictor_share"]
    print(f"predictor FLOPs: {predictor_flops:,} = {share:.4f}% of the utterance")
    for k, v in summary.items():
        ms = {q: v[f"{q}_s"] * 1000 for q in ("median", "p25", "p75")}
        spread = f"p25 {ms['p25']:.1f}, p75 {ms['p75']:.1f}"
        print(f"{k:>9}: median {ms['median']:7.1f} ms ({spread}), {len(tokens[k])} tokens")
    print(f"gating overhead with all gates open: {100 * report['gating_overhead_all_open']:+.2f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
