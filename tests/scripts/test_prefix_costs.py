"""scripts/prefix_costs.py on the seventeenth step's committed evaluations: the first 300 rows give the
figures the 300-row split gave (docs/training.md, "Sixteenth step"), dense joined from another file."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEP = ROOT / "results" / "issue15_gpu" / "seventeenth_step"


def test_first_rows_and_the_rest_of_each_group(tmp_path):
    files = sorted(STEP.glob("cpu_eval_*.json"))
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prefix_costs.py"), *map(str, files), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {(r["group"], r["set"]): r for r in json.loads(out.read_text())["rows"]}
    german = rows[("transcribe/de", "decoder-latency-0.5-context")]
    assert (round(german["first"], 2), round(german["all"], 2), german["rows"]) == (2.38, 0.63, 1400)
    # this set's file has no dense: dense comes from the FLOPs set's file of the same rows
    assert round(rows[("transcribe/en", "decoder-latency-0.5-context")]["first"], 2) == 0.95
