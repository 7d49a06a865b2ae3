import torch

from ctxprune.gating.skip import MaskPlan, run_branch


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, x, rows):
        self.calls.append((x.shape[0], None if rows is None else rows.tolist()))
        return torch.ones_like(x)


def test_all_rows_run_the_plain_path_none_runs_nothing_some_run_alone():
    x = torch.zeros(4, 3, 2)
    plan = MaskPlan(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]]), ["a", "b", "c"], "cpu")
    for name, expected_calls, expected_rows in [
        ("a", [(4, None)], [1, 1, 1, 1]),
        ("b", [(2, [0, 2])], [1, 0, 1, 0]),
        ("c", [], [0, 0, 0, 0]),
    ]:
        branch = Recorder()
        out = run_branch(x, branch, plan.keep(name))
        assert branch.calls == expected_calls
        assert out[:, 0, 0].tolist() == expected_rows


def test_soft_gates_multiply_and_pass_gradients():
    x = torch.randn(3, 2, 4)
    w = torch.tensor([1.0, 0.0, 1.0], requires_grad=True)
    out = run_branch(x, lambda h, rows: h * 2, w)
    torch.testing.assert_close(out[1], x[1])
    torch.testing.assert_close(out[0], 3 * x[0])
    out.sum().backward()
    assert w.grad.abs().sum() > 0
