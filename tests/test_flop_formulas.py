import torch
from torch.utils.flop_counter import FlopCounterMode

import ctxprune.flop_formulas  # noqa: F401


def test_attention_on_cpu_is_counted_as_its_score_and_value_products():
    b, h, length, d = 2, 4, 30, 16
    q = torch.randn(b, h, length, d)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * b * h * length * length * d)  # QK^T, then AV
