import pytest
import torch

from ctxprune.gating.space import GateCost, GateSpace
from ctxprune.gating.sparsity import SparsityTarget, skipped_fraction, sparsity_loss
from ctxprune.gating.straight_through import straight_through_gates

SPACE = GateSpace(
    names=("enc.0.attn", "enc.0.ffn", "dec.0.self_attn", "dec.0.ffn"),
    costs=(GateCost(300.0), GateCost(100.0), GateCost(per_token=1.0), GateCost(per_token=3.0)),
    model="toy",
    reference_tokens=10,
)


def test_count_and_flop_weighted_fractions_differ_as_they_should():
    keep = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # skip only the expensive encoder attention
    _, by_count = sparsity_loss(keep, SPACE, [SparsityTarget("", 0.5)], by="count")
    _, by_flops = sparsity_loss(keep, SPACE, [SparsityTarget("", 0.5)], by="flops")
    assert by_count["all"] == pytest.approx(0.25)
    assert by_flops["all"] == pytest.approx(300 / (300 + 100 + 10 + 30))


def test_separate_encoder_and_decoder_targets():
    keep = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss, s = sparsity_loss(
        keep, SPACE, [SparsityTarget("enc.", 0.0), SparsityTarget("dec.", 1.0)], by="count"
    )
    assert s == {"enc.": 0.0, "dec.": 1.0} and loss.item() == 0.0


def test_loss_is_alpha_times_squared_gap():
    keep = torch.ones(2, 4)
    loss, _ = sparsity_loss(keep, SPACE, [SparsityTarget("", 0.3)], by="count", alpha=2.0)
    assert loss.item() == pytest.approx(2.0 * 0.3**2)


def test_a_budget_per_task_holds_each_task_to_the_target():
    """Transcription skipping 0.3 and translation 0.7 meet a 0.5 target on the batch's mean, not per task."""
    keep = torch.tensor([[0.7] * 4, [0.7] * 4, [0.3] * 4, [0.3] * 4])
    tasks = ["transcribe", "transcribe", "translate", "translate"]
    target = [SparsityTarget("", 0.5)]
    batch_loss, s = sparsity_loss(keep, SPACE, target, by="count", alpha=2.0)
    task_loss, s_tasks = sparsity_loss(keep, SPACE, target, by="count", alpha=2.0, budgets=tasks)
    assert batch_loss.item() == pytest.approx(0.0, abs=1e-7) and s == s_tasks == {"all": pytest.approx(0.5)}
    assert task_loss.item() == pytest.approx(2.0 * (0.2**2 + 0.2**2) / 2)
    on_target = torch.full((4, 4), 0.5)
    assert sparsity_loss(on_target, SPACE, target, by="count", budgets=tasks)[0].item() == pytest.approx(0.0)


def test_toy_run_moves_sparsity_to_target():
    """Only the sparsity loss plus straight-through gates: s must converge to the target."""
    torch.manual_seed(0)
    logits = torch.full((1, 4), 3.0, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    target = [SparsityTarget("", 0.5)]
    for _ in range(300):
        gates = straight_through_gates(logits.expand(16, 4), tau=0.5)
        task = (gates * torch.tensor([0.01, 0.02, 0.03, 0.04])).sum(-1).mean() * -1  # keeping helps a bit
        loss, _ = sparsity_loss(torch.sigmoid(logits), SPACE, target, by="flops", alpha=5.0)
        opt.zero_grad()
        (task + loss).backward()
        opt.step()
    achieved = skipped_fraction((logits > 0).float(), torch.tensor(SPACE.weights()), list(range(4)))
    _, expected = sparsity_loss(torch.sigmoid(logits), SPACE, target, by="flops")
    assert abs(expected["all"] - 0.5) < 0.05
    assert achieved.item() > 0.3  # the hard mask skips real compute, not nothing
