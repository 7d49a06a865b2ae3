"""Compare two `bench/runtimes.py` records of the same machine and inputs (say, before and after a
refactor): per section and variant, each side's median with its quartiles, and whether the second is
slower beyond the spread (its p25 above the first's p75). Exactness checks are listed side by side.

Usage: python bench/compare_runtimes.py BEFORE.json AFTER.json [AFTER2.json ...] [--out comparison.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctxprune.paths import write_json_atomic

SECTIONS = ("natural_batch1", "fixed_batch1", "fixed_batch")


def compare(before: dict, after: dict) -> dict:
    out = {"device": [before["device"], after["device"]], "sections": {}, "checks": {}}
    for section in SECTIONS:
        rows = {}
        for name, b in before[section]["results"].items():
            a = after[section]["results"].get(name)
            if a is None:
                continue
            rows[name] = {
                "before_ms": [b["p25_ms"], b["median_ms"], b["p75_ms"]],
                "after_ms": [a["p25_ms"], a["median_ms"], a["p75_ms"]],
                "change": a["median_ms"] / b["median_ms"] - 1,
                "worse_beyond_spread": a["p25_ms"] > b["p75_ms"],
            }
        out["sections"][section] = rows
    out["checks"] = {
        "before": {**before["natural_batch1"]["checks"], "beam5": before["beam5"]},
        "after": {**after["natural_batch1"]["checks"], "beam5": after["beam5"]},
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    before = json.loads(args.before.read_text())
    results = {str(path): compare(before, json.loads(path.read_text())) for path in args.after}
    for path, result in results.items():
        print(f"\n{args.before.name} -> {Path(path).name}")
        head = ("section", "variant", "before ms (p25-p75)", "after ms (p25-p75)", "change")
        print(f"{head[0]:<15}{head[1]:<42}{head[2]:>24}{head[3]:>24}{head[4]:>8}")
        for section, rows in result["sections"].items():
            for name, r in rows.items():
                b, a = r["before_ms"], r["after_ms"]
                flag = "  WORSE" if r["worse_beyond_spread"] else ""
                before_ms, after_ms = (
                    f"{b[1]:.2f} ({b[0]:.2f}-{b[2]:.2f})",
                    f"{a[1]:.2f} ({a[0]:.2f}-{a[2]:.2f})",
                )
                print(f"{section:<15}{name:<42}{before_ms:>24}{after_ms:>24}{r['change']:>+8.1%}{flag}")
        worse = sum(r["worse_beyond_spread"] for rows in result["sections"].values() for r in rows.values())
        total = sum(len(rows) for rows in result["sections"].values())
        print(
            f"{worse} of {total} figures slower beyond the spread; checks after: {result['checks']['after']}"
        )
    if args.out:
        write_json_atomic(args.out, results)


if __name__ == "__main__":
    main()
