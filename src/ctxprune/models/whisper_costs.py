"""Whisper's gate space with costs measured by `FlopCounterMode` on each branch as it really runs.

Encoder branches are measured over the full 30 s window (Whisper always pads to it). Decoder
branches are measured per token; self-attention twice (at two cache lengths) to separate its
per-token part from its per-cached-position part; cross-attention K/V is a per-utterance cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

import ctxprune.flop_formulas  # noqa: F401  (CPU attention counted, as on CUDA)
from ctxprune.gating.space import GateCost, GateSpace
from ctxprune.models.whisper import GatedWhisper

_CACHE: dict[str, GateSpace] = {}


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return counter.get_total_flops()


def describe(gw: GatedWhisper) -> str:
    c = gw.config
    return (
        f"whisper(d={c.d_model}, enc={c.encoder_layers}, dec={c.decoder_layers}, "
        f"heads={c.encoder_attention_heads}/{c.decoder_attention_heads}, ffn={c.encoder_ffn_dim}/"
        f"{c.decoder_ffn_dim}, mels={c.num_mel_bins}, vocab={c.vocab_size})"
    )


def whisper_gate_space(gw: GatedWhisper) -> GateSpace:
    """Measured once per model shape, then reused. Refuses a quantized model: FlopCounterMode does not
    see quantized Linear layers, so its costs would read near zero (measure before quantizing)."""
    if any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in gw.model.modules()):
        raise ValueError(
            "measure the gate space before quantization: FlopCounterMode misses int8 Linear layers"
        )
    key = describe(gw)
    if key in _CACHE:
        return _CACHE[key]
    c = gw.config
    p = next(gw.model.parameters())
    frames = torch.zeros(1, c.max_source_positions, c.d_model, device=p.device, dtype=p.dtype)
    token = torch.zeros(1, 1, c.d_model, device=p.device, dtype=p.dtype)
    cache = gw.new_cache(1, 4)
    costs: dict[str, GateCost] = {}
    for i, layer in enumerate(gw.encoder.layers):
        costs[f"enc.{i}.attn"] = GateCost(
            per_utterance=count_flops(lambda lay=layer: gw.encoder_attention(lay, frames))
        )
        costs[f"enc.{i}.ffn"] = GateCost(per_utterance=count_flops(lambda lay=layer: gw.ffn(lay, frames)))
    for i, layer in enumerate(gw.decoder.layers):

        def self_attn(length: int, i=i) -> int:
            """One token at position `length - 1`, attending to the `length` cached positions."""
            position = torch.tensor([length - 1], device=p.device)
            return count_flops(lambda: gw.self_attention(i, token, None, cache, position, length))

        per_position = self_attn(2) - self_attn(1)
        costs[f"dec.{i}.self_attn"] = GateCost(
            per_token=self_attn(1) - per_position, per_token_position=per_position
        )
        costs[f"dec.{i}.cross_attn"] = GateCost(
            per_utterance=count_flops(lambda i=i: gw.cross_kv(i, frames)),
            per_token=count_flops(lambda i=i: gw.cross_attention(i, token, None, cache)),
        )
        costs[f"dec.{i}.ffn"] = GateCost(per_token=count_flops(lambda lay=layer: gw.ffn(lay, token)))
    features = torch.zeros(1, c.num_mel_bins, 2 * c.max_source_positions, device=p.device, dtype=p.dtype)
    ungated = GateCost(
        per_utterance=count_flops(lambda: gw.embed_audio(features)),
        per_token=count_flops(lambda: gw.model.proj_out(gw.decoder.layer_norm(token))),
    )
    space = GateSpace(
        names=tuple(gw.gate_names), costs=tuple(costs[n] for n in gw.gate_names), model=key, ungated=ungated
    )
    _CACHE[key] = space
    return space
