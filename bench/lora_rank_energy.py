"""Bench: could a gate set's LoRA be stored at a lower rank? For each module's update (B A, scaled), the
share of its squared singular values that the best rank-k approximation keeps (SVD truncation), at each
`--rank`; per gate set the worst and the median module, as JSON. A share well below 1 means truncation
changes the student, and its quality would have to be measured again.

Usage: python bench/lora_rank_energy.py GATESET [GATESET ...] [--rank 16 --rank 32] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file

from ctxprune.paths import write_json_atomic


def kept_energy(lora: Path, ranks: list[int]) -> dict[str, list[float]]:
    """{module: [share kept at each rank]} of one LoRA folder (PEFT's config and safetensors weights)."""
    if not (lora / "adapter_config.json").is_file():
        raise SystemExit(f"{lora.parent}: not a gate set with a LoRA (no lora/adapter_config.json)")
    config = json.loads((lora / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    weights = load_file(str(lora / "adapter_model.safetensors"))
    out = {}
    for key in sorted(k for k in weights if "lora_A" in k):
        update = weights[key.replace("lora_A", "lora_B")].double() @ weights[key].double() * scale
        energy = torch.linalg.svdvals(update) ** 2
        cumulative = energy.cumsum(0) / energy.sum()
        out[key.removesuffix(".lora_A.weight")] = [
            float(cumulative[min(k, len(cumulative)) - 1]) for k in ranks
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gates", type=Path, nargs="+")
    ap.add_argument("--rank", type=int, action="append", help="ranks to keep (default 16 and 32)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ranks = args.rank or [16, 32]
    report = {"ranks": ranks, "sets": {}}
    for gates in args.gates:
        modules = kept_energy(gates / "lora", ranks)
        summary = {}
        for i, k in enumerate(ranks):
            worst = min(modules, key=lambda m, i=i: modules[m][i])
            median = statistics.median(v[i] for v in modules.values())
            kept = modules[worst][i]
            summary[str(k)] = {"worst": kept, "worst_module": worst, "median": median}
            print(f"{gates.name}: rank {k} keeps {kept:.3f} at worst ({worst}), median {median:.3f}")
        report["sets"][gates.name] = {"modules": len(modules), "kept_energy": summary}
    if args.out:
        write_json_atomic(args.out, report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
