"""Calibrating a shipped gate set on the real Whisper base: from its masks as trained, the calibrated
shifts bring dev sparsity inside the tolerance, as the card recorded on the GPU."""

import json

import pytest

from ctxprune.data.manifest import read_manifest
from ctxprune.paths import ARTIFACTS
from ctxprune.stack import StackSpec, load_stack
from ctxprune.train.calibration import calibrate_predictor, calibration_record


def test_a_shipped_gate_set_is_calibrated_onto_its_target(real_whisper, tiny_corpus):
    gate_set = ARTIFACTS / "gates" / "decoder-flops-0.5-static"
    card = json.loads((gate_set / "card.json").read_text())
    stack = load_stack(StackSpec(gates=gate_set))
    rows = read_manifest(tiny_corpus, "dev")
    result = calibrate_predictor(stack.policy, stack.gated, tiny_corpus, rows, 0.5, "decoder", "flops")
    # a static set has one mask for every row: the tiny corpus measures what the H200's dev pass did
    assert result.sparsity_before == pytest.approx(card["calibration"]["sparsity_before"], abs=0.01)
    assert abs(result.sparsity_after - 0.5) <= 0.04
    assert stack.policy.predictor.config.logit_shift == result.shift  # the predictor now decodes with it
    record = calibration_record(result, stack.space, len(rows), "cpu")
    assert record["rows"] == len(rows) and set(record["logit_shift"]) == set(stack.space.names)
