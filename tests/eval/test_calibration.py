"""Calibrating a shipped gate set on the real Whisper base: the shift lands dev sparsity on the target
and persists in the gate set, whose card is rewritten to match its files."""

import json
import shutil

import pytest

from ctxprune.eval.calibration import calibrate_gate_set
from ctxprune.gating.predictor import GatePredictor
from ctxprune.paths import ARTIFACTS, sha256_files


def test_calibrating_a_shipped_gate_set_lands_on_its_target_and_rewrites_its_card(
    real_whisper, tiny_corpus, tmp_path
):
    gate_set = tmp_path / "decoder-flops-0.5-static"
    shutil.copytree(ARTIFACTS / "gates" / gate_set.name, gate_set)
    card = json.loads((gate_set / "card.json").read_text())
    card["config"]["eval_max_tokens"] = 24  # keep the CPU re-evaluation short
    (gate_set / "card.json").write_text(json.dumps(card))

    card = calibrate_gate_set(gate_set, tiny_corpus, adapter=ARTIFACTS / "lora-adapter")

    c = card["calibration"]
    assert abs(c["sparsity_before"] - 0.5) > 0.05  # as trained, this set missed its target (0.596)
    assert abs(c["sparsity_after"] - 0.5) <= 0.05 and c["logit_shift"] != 0.0
    assert card["achieved_sparsity"] == pytest.approx(c["sparsity_after"])  # a static mask: same on all rows
    assert GatePredictor.from_pretrained(gate_set).config.logit_shift == list(c["logit_shift"].values())
    exclude = {"card.json", "config.yaml", "metrics.jsonl"}
    assert (
        card["files"] == sha256_files(gate_set, exclude)
        and json.loads((gate_set / "card.json").read_text()) == card
    )
    again = calibrate_gate_set(gate_set, tiny_corpus, adapter=ARTIFACTS / "lora-adapter")
    assert (
        again["calibration"]["logit_shift"] == c["logit_shift"]
    )  # the shift is absolute: re-running is a no-op
