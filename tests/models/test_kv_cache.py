"""The KV cache owns its writes: positions are tensors, rows may be a subset, reads take a prefix or all."""

import torch

from ctxprune.models.kv_cache import KVCache


def _cache(batch=3, max_len=6) -> KVCache:
    return KVCache(n_layers=2, batch=batch, n_heads=2, head_dim=4, max_len=max_len, source_len=5,
                   device="cpu", dtype=torch.float32)  # fmt: skip


def test_write_puts_keys_and_values_at_the_positions_of_every_row():
    cache = _cache()
    k, v = torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    cache.write(1, None, torch.tensor([2, 3]), k, v)
    torch.testing.assert_close(cache.self_k[1][:, :, 2:4], k)
    torch.testing.assert_close(cache.self_v[1][:, :, 2:4], v)
    assert cache.self_k[1][:, :, [0, 1, 4, 5]].abs().sum() == 0 and cache.self_k[0].abs().sum() == 0


def test_write_of_some_rows_leaves_the_others_untouched():
    cache = _cache()
    rows = torch.tensor([0, 2])
    k = torch.randn(2, 2, 1, 4)
    cache.write(0, rows, torch.tensor([4]), k, -k)
    torch.testing.assert_close(cache.self_k[0][rows, :, 4:5], k)
    torch.testing.assert_close(cache.self_v[0][rows, :, 4:5], -k)
    assert cache.self_k[0][1].abs().sum() == 0


def test_read_returns_a_prefix_or_the_whole_cache_of_the_rows():
    cache = _cache()
    cache.write(0, None, torch.arange(6), torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 4))
    k, v = cache.read(0, None, length=3)
    assert k.shape == (3, 2, 3, 4) and torch.equal(k, cache.self_k[0][:, :, :3])
    k, v = cache.read(0, torch.tensor([1]))
    assert k.shape == (1, 2, 6, 4) and torch.equal(v, cache.self_v[0][1:2])


def test_cross_kv_of_some_rows_and_reorder_for_beams():
    cache = _cache()
    k = torch.randn(1, 2, 5, 4)
    cache.write_cross(1, torch.tensor([2]), k, 2 * k)
    got_k, got_v = cache.read_cross(1, torch.tensor([2]))
    torch.testing.assert_close(got_k, k)
    torch.testing.assert_close(got_v, 2 * k)
    assert cache.cross_k[1][:2].abs().sum() == 0
    history = torch.randn(3, 2, 6, 4)
    cache.write(0, None, torch.arange(6), history, history)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(cache.self_k[0], history[[2, 2, 0]]) and torch.equal(
        cache.self_v[0], history[[2, 2, 0]]
    )
