from itertools import combinations

import pytest
import torch

from ctxprune.gating.calibrate import calibrate_shift

# Two heavy gates and four light ones, like Whisper's decoder (cross-attention against feed-forward).
LOGITS = torch.tensor([-1.0, 0.5, 1.0, 2.0, 3.5, 6.0])  # a gate is kept where logit + shift > 0
WEIGHTS = torch.tensor([0.04, 0.4, 0.04, 0.4, 0.08, 0.04])


def sparsity_at(shift: torch.Tensor) -> float:
    return float(WEIGHTS[LOGITS + shift <= 0].sum())


def prefix_sparsities() -> list[float]:
    """What one shared shift can reach: the gates switched off in the order of their logits."""
    order = LOGITS.argsort()
    return [float(WEIGHTS[order[:k]].sum()) for k in range(len(LOGITS) + 1)]


@pytest.mark.parametrize("target", [0.0, 0.45, 0.47, 0.89, 1.0])
def test_one_shared_shift_when_it_comes_close_enough(target):
    result = calibrate_shift(sparsity_at, WEIGHTS, target, tolerance=0.02)
    assert abs(result.sparsity_after - target) <= 0.02
    assert len(set(result.shift)) == 1  # the learned order is kept: one cut
    assert result.sparsity_after == pytest.approx(sparsity_at(torch.tensor(result.shift)))
    assert result.sparsity_before == pytest.approx(0.04)


def test_light_gates_fill_the_gap_a_heavy_gate_leaves():
    target = 0.6  # one shared shift reaches 0.44 or 0.84; light gates can add up to 0.16
    assert min(abs(s - target) for s in prefix_sparsities()) > 0.1
    result = calibrate_shift(sparsity_at, WEIGHTS, target, tolerance=0.02)
    subsets = [sum(c) for k in range(7) for c in combinations(WEIGHTS.tolist(), k)]
    assert abs(result.sparsity_after - target) == pytest.approx(
        min(abs(s - target) for s in subsets), abs=1e-6
    )
    off = LOGITS + torch.tensor(result.shift) <= 0
    assert off[1] and not off[3]  # the heavy gate the model ranked first stays off, the other on


def test_no_shift_when_the_trained_gates_are_already_closest():
    assert calibrate_shift(sparsity_at, WEIGHTS, 0.05).shift == [0.0] * 6


def test_a_target_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="target sparsity"):
        calibrate_shift(sparsity_at, WEIGHTS, 1.5)
