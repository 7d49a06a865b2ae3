"""Finish a training run from its last checkpoint, with no more training: for a run whose GPU session ran
out in its deterministic tail. The predictor and LoRA are the checkpoint's, the calibration is the one the
run logged at that step (metrics.jsonl; else one is made here on dev), and the dev evaluation and card are
made here. It needs the corpus's dev split, not its train split. The card's `steps` are the checkpoint's and
`stopped_at` records the steps the run had planned.

Usage: python scripts/finish_from_checkpoint.py RUN_DIR --data CORPUS [--branch-times FILE]
(writes RUN_DIR/predictor/ and RUN_DIR/card.json; RUN_DIR/config.yaml names the machine's paths, which
--data and --branch-times replace)"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.train.config import TrainConfig
from ctxprune.train.run import Run


def logged_calibration(run_dir: Path, step: int) -> dict | None:
    """The calibration the run logged at `step` (after the checkpoint of that step was written)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    found = [r["calibration"] for r in rows if "calibration" in r and r["step"] == step]
    return found[-1] if found else None


def finish(run_dir: Path, data: Path, branch_times: Path | None = None) -> dict:
    state = run_dir / "checkpoint" / "state.json"
    if not state.is_file() or not (run_dir / "config.yaml").is_file():
        raise CtxpruneError(f"{run_dir} holds no checkpoint and config.yaml of a training run")
    config = replace(TrainConfig.from_yaml(run_dir / "config.yaml"), data=str(data), out=str(run_dir))
    if branch_times:
        config = replace(config, branch_times=str(branch_times))
    step = json.loads(state.read_text())["step"]
    return Run(config, times_elsewhere=True).finish_from_checkpoint(logged_calibration(run_dir, step))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="the corpus (its dev split is read)")
    ap.add_argument("--branch-times", type=Path, default=None, help="a latency run's branch_times.json")
    args = ap.parse_args()
    try:
        card = finish(args.run_dir, args.data, args.branch_times)
    except CtxpruneError as e:
        sys.exit(f"error: {e}")
    print(f"{args.run_dir}: step {card['stopped_at']['step']} of {card['stopped_at']['planned_steps']}, "
          f"achieved sparsity {card['achieved_sparsity']:.3f}, card written")  # fmt: skip


if __name__ == "__main__":
    main()
