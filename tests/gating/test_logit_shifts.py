from itertools import combinations

import pytest
import torch

from ctxprune.gating.logit_shifts import calibrate_shift

# Two heavy gates and four light ones, like Whisper's decoder (cross-attention against feed-forward).
LOGITS = torch.tensor([-1.0, 0.5, 1.0, 2.0, 3.5, 6.0])  # a gate is kept where logit + shift > 0
WEIGHTS = torch.tensor([0.04, 0.4, 0.04, 0.4, 0.08, 0.04])


def sparsity_at(shift: torch.Tensor) -> float:
    return float(WEIGHTS[LOGITS + shift <= 0].sum())


def off(shift: list[float]) -> list[bool]:
    return (LOGITS + torch.tensor(shift) <= 0).tolist()


@pytest.mark.parametrize("target", [0.0, 0.45, 0.47, 0.89, 1.0])
def test_one_shared_shift_when_the_next_cut_enters_the_window(target):
    result = calibrate_shift(sparsity_at, WEIGHTS, target, tolerance=0.02)
    assert abs(result.sparsity_after - target) <= 0.02
    assert len(set(result.shift)) == 1  # the learned order is kept: one cut
    assert result.sparsity_after == pytest.approx(sparsity_at(torch.tensor(result.shift)))
    assert result.sparsity_before == pytest.approx(0.04)


def test_the_least_change_that_enters_the_window_wins():
    # 0.44 (two gates off) and 0.48 (three) are both within 0.05 of 0.47: only one more gate goes off.
    result = calibrate_shift(sparsity_at, WEIGHTS, 0.47, tolerance=0.05)
    assert sum(off(result.shift)) == 2 and result.sparsity_after == pytest.approx(0.44)


def test_light_gates_fill_the_gap_a_heavy_gate_jumps_over():
    target = 0.6  # one shared shift reaches 0.48 or 0.88; the light gates left can add 0.12
    result = calibrate_shift(sparsity_at, WEIGHTS, target, tolerance=0.01)
    assert result.sparsity_after == pytest.approx(target)
    assert off(result.shift) == [True, True, True, False, True, True]  # the heavy gate ranked first is off


def test_the_closest_when_the_window_is_out_of_reach():
    result = calibrate_shift(sparsity_at, WEIGHTS, 0.7, tolerance=0.01)
    subsets = [sum(c) for k in range(7) for c in combinations(WEIGHTS.tolist(), k)]
    assert min(abs(s - 0.7) for s in subsets) > 0.01
    assert result.sparsity_after == pytest.approx(0.6)  # 0.88 is further


def test_no_shift_when_the_trained_gates_are_already_inside_the_window():
    assert calibrate_shift(sparsity_at, WEIGHTS, 0.07, tolerance=0.04).shift == [0.0] * 6


def test_a_target_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="target sparsity"):
        calibrate_shift(sparsity_at, WEIGHTS, 1.5)


def test_from_too_many_gates_off_the_cut_moves_back_and_light_gates_fill_the_window():
    logits = LOGITS - 2.25  # trained: gates 0-3 off (0.88)
    result = calibrate_shift(lambda s: float(WEIGHTS[logits + s <= 0].sum()), WEIGHTS, 0.6, tolerance=0.01)
    assert result.sparsity_before == pytest.approx(0.88) and result.sparsity_after == pytest.approx(0.6)
