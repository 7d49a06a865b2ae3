"""Whisper with gated residual branches. Wraps an upstream `WhisperForConditionalGeneration` and
calls its own submodules (layer norms, projections, convolutions); it never forks the modeling file.

Each encoder layer has two gated branches (`enc.i.attn`, `enc.i.ffn`) and each decoder layer three
(`dec.i.self_attn`, `dec.i.cross_attn`, `dec.i.ffn`). A skipped branch is an identity on the residual
stream and is not computed; see `ctxprune.gating.skip`. Attention is computed here, from the
upstream projections, because the decoder needs a static per-row KV cache that HF's cache classes
cannot express (a row that skips a branch must not write its cache slice).
"""

from __future__ import annotations

from contextlib import nullcontext

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
        self.label_branches = False  # profiler ranges "gate:<name>" around every branch (module times)

    def _branch(self, x: Tensor, branch, gates: Gates, name: str) -> Tensor:
        if not self.label_branches:
            return run_branch(x, branch, keep_of(gates, name))
        with torch.profiler.record_function(f"gate:{name}"):
            return run_branch(x, branch, keep_of(gates, name))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
            x = self._branch(
                x, lambda h, _rows, lay=layer: self._encoder_attn(lay, h), gates, f"enc.{i}.attn"
            )
            x = self._branch(x, lambda h, _rows, lay=layer: self._ffn(lay, h), gates, f"enc.{i}.ffn")
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
        """Cross-attention K/V, once per utterance, only for rows that keep that layer's cross-attention.
        Written in place, so that a captured decoding step keeps reading the same buffers."""
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.encoder_attn
            keep = keep_of(gates, f"dec.{i}.cross_attn")
            rows = None
            if keep is not None and not isinstance(keep, Tensor):
                if keep.nobody:
                    continue
                rows = keep.index
            label = f"gate:dec.{i}.cross_attn" if self.label_branches else None
            with torch.profiler.record_function(label) if label else nullcontext():
                src = encoder_out if rows is None else encoder_out.index_select(0, rows)
                for buffer, proj in ((cache.cross_k[i], attn.k_proj), (cache.cross_v[i], attn.v_proj)):
                    if rows is None:
                        buffer.copy_(_split_heads(proj(src), attn.num_heads))
                    else:
                        buffer[rows] = _split_heads(proj(src), attn.num_heads)

    def decode(self, tokens: Tensor, cache: StaticKVCache, gates: Gates = None) -> Tensor:
        """Logits for `tokens` [batch, T] placed after the `cache.length` tokens already decoded."""
        start, end = cache.reserve(tokens.shape[1])
        logits = self._decode(tokens, cache, gates, slice(start, end))
        cache.length = end
        return logits

    def decode_at(
        self, tokens: Tensor, position: Tensor, cache: StaticKVCache, gates: Gates = None
    ) -> Tensor:
        """Logits for one token per row [batch, 1] at `position` (a one-element tensor on the device).
        Every shape is fixed (attention reads the whole cache under a mask), so a CUDA graph can capture
        it once and replay it for every step; the position advances on the device, not the host."""
        return self._decode(tokens, cache, gates, position)

    def _decode(self, tokens: Tensor, cache: StaticKVCache, gates: Gates, where: slice | Tensor) -> Tensor:
        dec = self.decoder
        visible = None  # at a device-side position: the cache positions up to it, shared by every layer
        if isinstance(where, slice):
            positions = dec.embed_positions.weight[where]
        else:
            positions = dec.embed_positions.weight.index_select(0, where)
            visible = (torch.arange(cache.max_len, device=tokens.device) <= where)[None]
        x = dec.embed_tokens(tokens) + positions
        for i, layer in enumerate(dec.layers):

            def self_attn(h, rows, i=i, layer=layer):
                return self._decoder_self_attn(i, layer, h, rows, cache, where, visible)

            def cross_attn(h, rows, i=i, layer=layer):
                return self._decoder_cross_attn(i, layer, h, rows, cache)

            x = self._branch(x, self_attn, gates, f"dec.{i}.self_attn")
            x = self._branch(x, cross_attn, gates, f"dec.{i}.cross_attn")
            x = self._branch(x, lambda h, _rows, lay=layer: self._ffn(lay, h), gates, f"dec.{i}.ffn")
        return self.model.proj_out(dec.layer_norm(x))

    @staticmethod
    def _decoder_self_attn(
        i, layer, h, rows, cache: StaticKVCache, where: slice | Tensor, visible: Tensor | None = None
    ) -> Tensor:
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(h)
        q, k, v = (_split_heads(p(h), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        k_cache, v_cache = cache.self_k[i], cache.self_v[i]
        mask = None
        if isinstance(where, slice):
            start, end = where.start, where.stop
            if rows is None:
                k_cache[:, :, start:end] = k
                v_cache[:, :, start:end] = v
            else:
                k_cache[rows, :, start:end] = k
                v_cache[rows, :, start:end] = v
            keys, values = k_cache[:, :, :end], v_cache[:, :, :end]
            if end - start > 1:  # several new tokens: each sees the cached prefix and the new ones before it
                mask = torch.ones(end - start, end, dtype=torch.bool, device=h.device).tril(start)
        else:  # one token at a device-side position: write it there, attend to positions <= it
            if rows is None:
                k_cache.index_copy_(2, where, k)
                v_cache.index_copy_(2, where, v)
            else:
                heads = torch.arange(k.shape[1], device=h.device)
                index = (rows[:, None, None], heads[None, :, None], where[None, None, :])
                k_cache.index_put_(index, k)
                v_cache.index_put_(index, v)
            keys, values, mask = k_cache, v_cache, visible
        if rows is not None:
            keys, values = keys[rows], values[rows]
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
