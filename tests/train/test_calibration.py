"""Calibrating a shipped gate set on the real Whisper base: its trained masks miss the target by more
than the tolerance; the calibrated shifts bring dev sparsity inside it."""

from ctxprune.data.manifest import read_manifest
from ctxprune.paths import ARTIFACTS, SHIPPED_ADAPTER
from ctxprune.stack import StackSpec, load_stack
from ctxprune.train.calibration import calibrate_predictor, calibration_record


def test_a_shipped_gate_set_is_calibrated_onto_its_target(real_whisper, tiny_corpus):
    stack = load_stack(
        StackSpec(adapter=SHIPPED_ADAPTER, gates=ARTIFACTS / "gates" / "decoder-flops-0.5-static")
    )
    rows = read_manifest(tiny_corpus, "dev")
    result = calibrate_predictor(stack.policy, stack.gated, tiny_corpus, rows, 0.5, "decoder", "flops")
    assert abs(result.sparsity_before - 0.5) > 0.05  # as trained, this set skipped 0.596 of the decoder
    assert abs(result.sparsity_after - 0.5) <= 0.04
    assert stack.policy.predictor.config.logit_shift == result.shift  # the predictor now decodes with it
    record = calibration_record(result, stack.space, len(rows), "cpu")
    assert record["rows"] == len(rows) and set(record["logit_shift"]) == set(stack.space.names)
