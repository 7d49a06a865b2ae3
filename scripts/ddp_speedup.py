"""Data-parallel speed-up of one training run: the same config on one GPU and under torchrun on several,
compared by utterances per second over the logged steps after a warm-up (metrics.jsonl's `elapsed`).

Usage: python scripts/ddp_speedup.py RUN_1GPU RUN_NGPU [--skip 20] [--out results/ddp_speedup.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctxprune.paths import write_json_atomic


def throughput(run: Path, skip: int) -> dict:
    card = json.loads((run / "card.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "elapsed" in r and r["step"] > skip]
    first, last = steps[0], steps[-1]
    processes = card["hardware"]["processes"]
    utterances = (last["step"] - first["step"]) * card["config"]["batch_size"] * processes
    seconds = last["elapsed"] - first["elapsed"]
    return {
        "processes": processes,
        "device": card["hardware"]["device"],
        "batch_per_process": card["config"]["batch_size"],
        "steps_timed": last["step"] - first["step"],
        "seconds": round(seconds, 2),
        "utterances_per_second": round(utterances / seconds, 1),
        "seconds_per_step": round(seconds / (last["step"] - first["step"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("one", type=Path)
    parser.add_argument("many", type=Path)
    parser.add_argument("--skip", type=int, default=20, help="warm-up steps left out")
    parser.add_argument("--out", type=Path, default=Path("results/ddp_speedup.json"))
    args = parser.parse_args()
    one, many = throughput(args.one, args.skip), throughput(args.many, args.skip)
    speedup = many["utterances_per_second"] / one["utterances_per_second"]
    record = {"one": one, "many": many, "speedup": round(speedup, 3)}
    write_json_atomic(args.out, record)
    for r in (one, many):
        rate, step = r["utterances_per_second"], r["seconds_per_step"]
        print(f"{r['processes']} process(es): {rate} utterances/s, {step} s/step")
    print(f"speed-up {speedup:.2f}x on {many['processes']} GPUs; written to {args.out}")


if __name__ == "__main__":
    main()
