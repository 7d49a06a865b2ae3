"""Bench: greedy WER of the prepared Whisper base on Debian's five LibriVox clips, as JSON.

Usage: python bench/librivox_wer.py [--out results/librivox_wer.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

from ctxprune.eval.librivox import librivox_references, word_error_rate
from ctxprune.paths import write_json_atomic
from ctxprune.transcriber import Transcriber


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/librivox_wer.json"))
    args = ap.parse_args()
    refs = librivox_references()
    paths = sorted(refs)
    results = Transcriber().transcribe(paths, language="en", batch_size=5)
    hyps = [r.text for r in results]
    wer = word_error_rate([refs[p] for p in paths], hyps)
    write_json_atomic(
        args.out,
        {
            "bench": "librivox_wer",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "decoding": "greedy, language en, Whisper EnglishTextNormalizer",
            "wer": wer,
            "clips": [
                {"clip": p.name, "reference": refs[p], "hypothesis": h}
                for p, h in zip(paths, hyps, strict=True)
            ],
        },
    )
    print(f"LibriVox WER {wer:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
