"""Whisper's gate space with costs measured by `FlopCounterMode` on each branch as it really runs.

Encoder branches are measured over the full 30 s window (Whisper always pads to it). Decoder
branches are measured per token; self-attention twice (at two cache lengths) to separate its
per-token part from its per-cached-position part; cross-attention K/V is a per-utterance cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

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
    """Measured once per model shape, then reused."""
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
            per_utterance=count_flops(lambda lay=layer: gw._encoder_attn(lay, frames))
        )
        costs[f"enc.{i}.ffn"] = GateCost(per_utterance=count_flops(lambda lay=layer: gw._ffn(lay, frames)))
    for i, layer in enumerate(gw.decoder.layers):

        def self_attn(length: int, i=i, layer=layer) -> int:
            return count_flops(
                lambda: gw._decoder_self_attn(i, layer, token, None, cache, slice(length - 1, length))
            )

        per_position = self_attn(2) - self_attn(1)
        costs[f"dec.{i}.self_attn"] = GateCost(
            per_token=self_attn(1) - per_position, per_token_position=per_position
        )
        attn = layer.encoder_attn
        costs[f"dec.{i}.cross_attn"] = GateCost(
            per_utterance=count_flops(lambda a=attn: (a.k_proj(frames), a.v_proj(frames))),
            per_token=count_flops(
                lambda i=i, layer=layer: gw._decoder_cross_attn(i, layer, token, None, cache)
            ),
        )
        costs[f"dec.{i}.ffn"] = GateCost(per_token=count_flops(lambda lay=layer: gw._ffn(lay, token)))
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
