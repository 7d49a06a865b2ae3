"""Whisper with gated residual branches. Wraps an upstream `WhisperForConditionalGeneration` and
calls its own submodules (layer norms, projections, convolutions); it never forks the modeling file.

Each encoder layer has two gated branches (`enc.i.attn`, `enc.i.ffn`) and each decoder layer three
(`dec.i.self_attn`, `dec.i.cross_attn`, `dec.i.ffn`). A skipped branch is an identity on the residual
stream and is not computed; see `ctxprune.gating.skip`. Attention is computed here, from the
upstream projections, because the decoder needs a static per-row KV cache that HF's cache classes
cannot express (a row that skips a branch must not write its cache slice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import WhisperConfig, WhisperForConditionalGeneration

from ctxprune.gating.skip import Gates, keep_of, run_branch
from ctxprune.runtime.kv_cache import StaticKVCache

# the gate-name prefix of each stack a run can gate ("both" = every gate)
STACK_PREFIX = {"encoder": "enc.", "decoder": "dec.", "both": ""}


def whisper_gate_names(config: WhisperConfig) -> list[str]:
    """Stable, ordered names of Whisper's gateable branches: encoder layers first, then decoder."""
    names = [f"enc.{i}.{b}" for i in range(config.encoder_layers) for b in ("attn", "ffn")]
    names += [
        f"dec.{i}.{b}" for i in range(config.decoder_layers) for b in ("self_attn", "cross_attn", "ffn")
    ]
    return names


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class GatedWhisper(nn.Module):
    """The upstream model plus gated forward passes for the encoder and for cached decoding."""

    def __init__(self, model: WhisperForConditionalGeneration):
        super().__init__()
        self.model = model
        self.config: WhisperConfig = model.config
        self.gate_names = whisper_gate_names(self.config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.model.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.model.model.decoder

    # ---------------------------------------------------------------- encoder
    def embed_audio(self, features: Tensor) -> Tensor:
        """The convolutional front-end plus positions: what exists before any gated branch runs."""
        enc = self.encoder
        x = F.gelu(enc.conv1(features))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        return x + enc.embed_positions.weight[: x.shape[1]]

    def encode(self, features: Tensor, gates: Gates = None, embedded: Tensor | None = None) -> Tensor:
        x = self.embed_audio(features) if embedded is None else embedded
        for i, layer in enumerate(self.encoder.layers):
            x = run_branch(
                x, lambda h, _rows, lay=layer: self._encoder_attn(lay, h), keep_of(gates, f"enc.{i}.attn")
            )
            x = run_branch(x, lambda h, _rows, lay=layer: self._ffn(lay, h), keep_of(gates, f"enc.{i}.ffn"))
        return self.encoder.layer_norm(x)

    def _encoder_attn(self, layer: nn.Module, h: Tensor) -> Tensor:
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(h)
        q, k, v = (_split_heads(p(h), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        return attn.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)))

    @staticmethod
    def _ffn(layer: nn.Module, h: Tensor) -> Tensor:
        return layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))

    # ---------------------------------------------------------------- decoder
    def new_cache(self, batch: int, max_len: int, device=None, dtype=None) -> StaticKVCache:
        c = self.config
        p = next(self.model.parameters())
        return StaticKVCache(
            c.decoder_layers,
            batch,
            c.decoder_attention_heads,
            c.d_model // c.decoder_attention_heads,
            max_len,
            c.max_source_positions,
            device or p.device,
            dtype or p.dtype,
        )

    def prefill_cross(self, encoder_out: Tensor, cache: StaticKVCache, gates: Gates = None) -> None:
        """Cross-attention K/V, once per utterance, only for rows that keep that layer's cross-attention."""
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.encoder_attn
            keep = keep_of(gates, f"dec.{i}.cross_attn")
            if keep is not None and not isinstance(keep, Tensor):
                if keep.nobody:
                    continue
                if not keep.everyone:
                    src = encoder_out.index_select(0, keep.index)
                    cache.cross_k[i][keep.index] = _split_heads(attn.k_proj(src), attn.num_heads)
                    cache.cross_v[i][keep.index] = _split_heads(attn.v_proj(src), attn.num_heads)
                    continue
            cache.cross_k[i] = _split_heads(attn.k_proj(encoder_out), attn.num_heads)
            cache.cross_v[i] = _split_heads(attn.v_proj(encoder_out), attn.num_heads)

    def decode(self, tokens: Tensor, cache: StaticKVCache, gates: Gates = None) -> Tensor:
        """Logits for `tokens` [batch, T] placed after the `cache.length` tokens already decoded."""
        start, end = cache.reserve(tokens.shape[1])
        dec = self.decoder
        x = dec.embed_tokens(tokens) + dec.embed_positions.weight[start:end]
        for i, layer in enumerate(dec.layers):

            def self_attn(h, rows, i=i, layer=layer):
                return self._decoder_self_attn(i, layer, h, rows, cache, start, end)

            def cross_attn(h, rows, i=i, layer=layer):
                return self._decoder_cross_attn(i, layer, h, rows, cache)

            x = run_branch(x, self_attn, keep_of(gates, f"dec.{i}.self_attn"))
            x = run_branch(x, cross_attn, keep_of(gates, f"dec.{i}.cross_attn"))
            x = run_branch(x, lambda h, _rows, lay=layer: self._ffn(lay, h), keep_of(gates, f"dec.{i}.ffn"))
        cache.length = end
        return self.model.proj_out(dec.layer_norm(x))

    @staticmethod
    def _decoder_self_attn(i, layer, h, rows, cache: StaticKVCache, start: int, end: int) -> Tensor:
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(h)
        q, k, v = (_split_heads(p(h), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        k_cache, v_cache = cache.self_k[i], cache.self_v[i]
        if rows is None:
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v
            keys, values = k_cache[:, :, :end], v_cache[:, :, :end]
        else:
            k_cache[rows, :, start:end] = k
            v_cache[rows, :, start:end] = v
            keys, values = k_cache[rows, :, :end], v_cache[rows, :, :end]
        mask = None
        if end - start > 1:  # several new tokens: each sees the cached prefix and the new tokens before it
            mask = torch.ones(end - start, end, dtype=torch.bool, device=h.device).tril(start)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling)
        return attn.out_proj(_merge_heads(out))

    @staticmethod
    def _decoder_cross_attn(i, layer, h, rows, cache: StaticKVCache) -> Tensor:
        attn = layer.encoder_attn
        h = layer.encoder_attn_layer_norm(h)
        q = _split_heads(attn.q_proj(h), attn.num_heads)
        keys, values = cache.cross_k[i], cache.cross_v[i]
        if rows is not None:
            keys, values = keys[rows], values[rows]
        out = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling)
        return attn.out_proj(_merge_heads(out))
