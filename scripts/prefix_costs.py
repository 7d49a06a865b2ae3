"""Each gate set's cost on the first N rows of every group and on the rest, from eval files with row
statistics: whether a figure from a smaller test split drawn the same way was the draw (docs/training.md,
"Seventeenth step"). Dense may come from another file of the same rows (an evaluation in parts).

    python scripts/prefix_costs.py results/issue15_gpu/seventeenth_step/cpu_eval_*.json --at 300 --out F
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctxprune.eval.records import EvalRecord, read_record
from ctxprune.eval.significance import cost_on_rows
from ctxprune.paths import write_json_atomic


def prefix_costs(paths: list[Path], at: int) -> list[dict]:
    records = [r for r in map(read_record, paths) if isinstance(r, EvalRecord)]
    dense = {(r.split, k): g for r in records if (d := r.dense()) for k, g in d.groups.items()}
    out = []
    for r in records:
        for m in r.models:
            for key, group in m.groups.items():
                reference = dense.get((r.split, key))
                if m.kind == "dense" or reference is None:
                    continue
                task = key.split("/", 1)[0]
                costs = {
                    part: cost_on_rows(group, reference, task, rows)
                    for part, rows in (("all", slice(None)), ("first", slice(at)), ("rest", slice(at, None)))
                }
                out.append(
                    {"split": r.split, "group": key, "set": m.name, "rows": group.n, "at": at, **costs}
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="eval JSON files (ctxprune eval --json)")
    parser.add_argument("--at", type=int, default=300, help="rows per group of the smaller split")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = prefix_costs(args.files, args.at)
    for row in rows:
        cost = "WER rise, points" if row["group"].startswith("transcribe") else "BLEU drop"
        figures = "  ".join(
            f"{k} {row[k]:+.2f}" if row[k] is not None else f"{k} -" for k in ("all", "first", "rest")
        )
        print(f"{row['split']} {row['group']} {row['set']} ({cost}; first = rows 1-{row['at']}): {figures}")
    if args.out:
        write_json_atomic(args.out, {"kind": "prefix_costs", "rows": rows})


if __name__ == "__main__":
    main()
