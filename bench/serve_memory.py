"""Bench: the server's memory with every shipped gate set loaded, side by side: as `ServedModels` loads
them (one dense model that every set's loop guard falls back to) and with a dense copy per set (what
`load_stack` makes when no teacher is given). Each variant loads in a fresh process, repeatedly, and the
JSON holds each process's peak resident memory (ru_maxrss) and load time: medians and spread.

Usage: python bench/serve_memory.py [--repeats 3] [--out results/serve_memory.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.serve.models import ServedModels, shipped_gate_sets
from ctxprune.stack import StackSpec
from ctxprune.transcriber import Transcriber

VARIANTS = ("shared-teacher", "teacher-per-set")


def _load(variant: str) -> tuple[float, float]:
    """Peak RSS in MiB and seconds to load dense and every shipped set, in this (fresh) process."""
    start = time.perf_counter()
    if variant == "shared-teacher":
        models = ServedModels(shipped_gate_sets())
    else:
        models = [Transcriber(StackSpec())] + [Transcriber(StackSpec(gates=g)) for g in shipped_gate_sets()]
    seconds = time.perf_counter() - start
    del models
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per variant (interleaved)")
    ap.add_argument("--out", type=Path, default=Path("results/serve_memory.json"))
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child: load, print, exit
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_load(args.one)))
        return
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    runs: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    with progress_bar() as bar:
        task = bar.add_task("loading", total=args.repeats * len(VARIANTS))
        for _ in range(args.repeats):
            for variant in VARIANTS:  # a fresh process each: its peak is this variant's alone
                child = [sys.executable, __file__, "--one", variant]
                out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                runs[variant].append(tuple(json.loads(out.splitlines()[-1])))
                bar.advance(task)
    record = {
        "kind": "bench-serve-memory",
        "gate_sets": [g.name for g in shipped_gate_sets()],
        "device": "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "results": {
            v: {"peak_rss_mib": _summary([r[0] for r in rs]), "load_s": _summary([r[1] for r in rs])}
            for v, rs in runs.items()
        },
    }
    write_json_atomic(args.out, record)
    for v, r in record["results"].items():
        rss, s = r["peak_rss_mib"], r["load_s"]
        spread = f"[{rss['min']:.0f}-{rss['max']:.0f}]"
        print(f"{v:16s} peak RSS {rss['median']:7.0f} MiB {spread}  load {s['median']:.1f} s")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
