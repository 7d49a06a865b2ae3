import random

import torch

from ctxprune.train.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_restores_weights_optimizer_and_rngs(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    params = dict(net.named_parameters())
    save_checkpoint(tmp_path / "ckpt", 7, params, opt, gen, {"elapsed": 1.5})
    expected = (
        torch.rand(3),
        torch.rand(2, generator=gen),
        random.random(),
        {k: v.clone() for k, v in params.items()},
    )

    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    other_gen = torch.Generator()
    meta = load_checkpoint(tmp_path / "ckpt", dict(other.named_parameters()), other_opt, other_gen)
    assert meta["step"] == 7 and meta["elapsed"] == 1.5
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(2, generator=other_gen), expected[1])
    assert random.random() == expected[2]
    for name, p in other.named_parameters():
        assert torch.equal(p, expected[3][name])
    a, b = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
