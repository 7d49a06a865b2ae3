"""FLOP formulas that torch's `FlopCounterMode` lacks, registered on import.

On CPU, `scaled_dot_product_attention` runs `aten._scaled_dot_product_flash_attention_for_cpu`, which
torch (2.13) has no formula for: the counter saw the attention's projections but not its score and
value products (4.6 of an encoder attention's 7.75 GFLOPs), so every CPU count of attention was low
and disagreed with the counts made on CUDA, where the flash kernels are counted. The formula is
torch's own for the CUDA kernels.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula, sdpa_flop_count

_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


@register_flop_formula(_CPU_SDPA)
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)
