"""Bench: greedy WER on Debian's five real LibriVox clips (English speech), of the prepared Whisper base
and, with `--gates`, of each gate set on top of it, side by side, as JSON. Issue 15's target: the
default decoder 0.5 set keeps WER within +0.01 of base Whisper.

Usage: python bench/librivox_wer.py [--gates artifacts/gates/X ...] [--out results/librivox_wer.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

from ctxprune.eval.librivox import librivox_references, word_error_rate
from ctxprune.paths import write_json_atomic
from ctxprune.stack import StackSpec
from ctxprune.transcriber import Transcriber


def measure(refs: dict[Path, str], gates: Path | None) -> dict:
    paths = sorted(refs)
    results = Transcriber(StackSpec(gates=str(gates) if gates else None)).transcribe(
        paths, language="en", batch_size=5
    )
    hyps = [r.text for r in results]
    return {
        "model": gates.name if gates else "base",
        "gates": str(gates) if gates else None,
        "wer": word_error_rate([refs[p] for p in paths], hyps),
        "clips": [
            {"clip": p.name, "reference": refs[p], "hypothesis": h} for p, h in zip(paths, hyps, strict=True)
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gates", type=Path, action="append", default=[], help="a gate set (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("results/librivox_wer.json"))
    args = ap.parse_args()
    for g in args.gates:
        if not (g / "predictor.json").is_file():
            ap.error(f"{g} is not a gate set (no predictor.json)")
    refs = librivox_references()
    models = [measure(refs, g) for g in [None, *args.gates]]
    base = models[0]["wer"]
    for m in models:
        m["wer_rise"] = m["wer"] - base
    write_json_atomic(
        args.out,
        {
            "bench": "librivox_wer",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "decoding": "greedy, language en, Whisper EnglishTextNormalizer",
            "wer": base,
            "models": models,
        },
    )
    for m in models:
        print(f"{m['model']:32s} LibriVox WER {m['wer']:.3f} ({m['wer_rise']:+.3f} against base)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
