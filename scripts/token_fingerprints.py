"""Tokens and masks of every shipped gate set (and dense, with and without the adapter) on the real model:
the five LibriVox clips and a corpus sample. Run before and after a refactor that must not change
behaviour, then compare.

Usage: python scripts/token_fingerprints.py CORPUS_DIR --out before.json
       python scripts/token_fingerprints.py CORPUS_DIR --out after.json --compare before.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import read_manifest
from ctxprune.eval.librivox import LIBRIVOX_DIR
from ctxprune.paths import ARTIFACTS, SHIPPED_ADAPTER, write_json_atomic
from ctxprune.stack import BASE_ADAPTER, StackSpec, load_stack


def _inputs(corpus: Path, rows: int) -> list[tuple]:
    """Batches: the LibriVox clips (language detected), then corpus test rows by (task, language)."""
    clips = [load_audio(p) for p in sorted(LIBRIVOX_DIR.glob("*.wav"))]
    batches = [(clips, ["transcribe"] * len(clips), [None] * len(clips))]
    examples = read_manifest(corpus, "test")[:rows]
    audio = [load_audio(corpus / e.audio) for e in examples]
    batches.append((audio, [e.task for e in examples], [e.language for e in examples]))
    return batches


def fingerprints(corpus: Path, rows: int) -> dict:
    sets = sorted(p for p in (ARTIFACTS / "gates").iterdir() if (p / "card.json").is_file())
    specs = {"dense-base": StackSpec(), "dense-adapter": StackSpec(adapter=SHIPPED_ADAPTER)}
    trained_on = {p: SHIPPED_ADAPTER if (p / BASE_ADAPTER).is_file() else None for p in sets}
    specs.update({p.name: StackSpec(adapter=trained_on[p], gates=p) for p in sets})
    batches = _inputs(corpus, rows)
    out = {}
    for name, spec in specs.items():
        stack = load_stack(spec)
        runs = []
        for audio, tasks, languages in batches:
            feats, frames = features_for(audio)
            result = stack.run(feats, frames, tasks, languages)
            runs.append(
                {"tokens": result.tokens, "languages": result.languages, "mask": result.mask.tolist()}
            )
        out[name] = runs
        print(name, "done", file=sys.stderr)
    return {"torch": torch.__version__, "rows": rows, "sets": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--compare", type=Path, default=None)
    args = ap.parse_args()
    record = fingerprints(args.corpus, args.rows)
    write_json_atomic(args.out, record)
    if args.compare:
        before = json.loads(args.compare.read_text())["sets"]
        differ = [n for n in before if before[n] != record["sets"].get(n)]
        print(
            f"{len(before) - len(differ)}/{len(before)} identical" + (f"; differ: {differ}" if differ else "")
        )
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
