"""Print one line per training run under a runs directory: its card's sparsity (trained, calibrated, on
dev) or, while it has no card yet, the last line of its log. Usage: summarize_runs.py RUNS [GLOB]"""

import json
import sys
from pathlib import Path


def main() -> None:
    runs, pattern = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "*"
    for log in sorted(runs.glob(f"{pattern}.log")):
        card = log.with_suffix("") / "card.json"
        if not card.is_file():
            lines = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
            print(f"{log.stem:36} no card yet: {(lines or [''])[-1][:90]}")
            continue
        c = json.loads(card.read_text())
        cal = c.get("calibration") or {}
        before, after = cal.get("sparsity_before", float("nan")), cal.get("sparsity_after", float("nan"))
        print(
            f"{log.stem:36} target {c['target_sparsity']:.2f}  trained {before:.3f}"
            f"  calibrated {after:.3f}  dev {c['achieved_sparsity']:.3f}"
        )


if __name__ == "__main__":
    main()
