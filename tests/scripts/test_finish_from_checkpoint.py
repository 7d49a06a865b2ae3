"""`scripts/finish_from_checkpoint.py` on bad input (its work is `Run.finish_from_checkpoint`, tested in
tests/train/test_run.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "finish_from_checkpoint.py"


def test_a_directory_without_a_run_gets_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--data", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: {tmp_path} holds no checkpoint and config.yaml of a training run"
