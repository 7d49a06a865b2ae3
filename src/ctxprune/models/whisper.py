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

from ctxprune.gating.skip import Gates, SoftGates, keep_of, run_branch
from ctxprune.models.kv_cache import KVCache, SharedSources

# the gate-name prefix of each stack a run can gate ("both" = every gate)
STACK_PREFIX = {"encoder": "enc.", "decoder": "dec.", "both": ""}
DECODER_PREFIX = STACK_PREFIX["decoder"]  # the late gates: decided after the encoder has run


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
                x, lambda h, _rows, lay=layer: self.encoder_attention(lay, h), gates, f"enc.{i}.attn"
            )
            x = self._branch(x, lambda h, _rows, lay=layer: self.ffn(lay, h), gates, f"enc.{i}.ffn")
        return self.encoder.layer_norm(x)

    def encoder_attention(self, layer: nn.Module, h: Tensor) -> Tensor:
        """An encoder layer's self-attention branch (without the residual)."""
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(h)
        q, k, v = (_split_heads(p(h), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        return attn.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)))

    @staticmethod
    def ffn(layer: nn.Module, h: Tensor) -> Tensor:
        """A layer's feed-forward branch (without the residual)."""
        return layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))

    # ---------------------------------------------------------------- decoder
    def new_cache(
        self, batch: int, max_len: int, device=None, dtype=None, sources: int | None = None
    ) -> KVCache:
        c = self.config
        p = next(self.model.parameters())
        return KVCache(
            c.decoder_layers,
            batch,
            c.decoder_attention_heads,
            c.d_model // c.decoder_attention_heads,
            max_len,
            c.max_source_positions,
            device or p.device,
            dtype or p.dtype,
            sources,
        )

    def prefill_cross(
        self, encoder_out: Tensor, cache: KVCache, gates: Gates = None, utterance: Tensor | None = None
    ) -> None:
        """Cross-attention K/V, once per utterance, only for rows that keep that layer's cross-attention.

        With `utterance` (training: several target sequences per utterance; a cache made with `sources`
        = the utterances), row r reads the K/V of `encoder_out[utterance[r]]`, projected and kept once
        per utterance (`SharedSources`)."""
        if utterance is not None:
            if not (gates is None or isinstance(gates, SoftGates)):
                raise ValueError("prefill_cross: `utterance` is for training (soft or no gates)")
            cache.shared = SharedSources(utterance, encoder_out.shape[0])
        for i in range(len(self.decoder.layers)):
            keep = keep_of(gates, f"dec.{i}.cross_attn")
            rows = None
            if keep is not None and not isinstance(keep, Tensor):
                if keep.nobody:
                    continue
                rows = keep.index
            label = f"gate:dec.{i}.cross_attn" if self.label_branches else None
            with torch.profiler.record_function(label) if label else nullcontext():
                src = encoder_out if rows is None else encoder_out.index_select(0, rows)
                cache.write_cross(i, rows, *self.cross_kv(i, src))

    def cross_kv(self, i: int, encoder_out: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder layer `i`'s cross-attention keys and values of an encoder output, split into heads."""
        attn = self.decoder.layers[i].encoder_attn
        return _split_heads(attn.k_proj(encoder_out), attn.num_heads), _split_heads(
            attn.v_proj(encoder_out), attn.num_heads
        )

    def decode(
        self,
        tokens: Tensor,
        positions: Tensor,
        cache: KVCache,
        gates: Gates = None,
        length: int | None = None,
        hidden: list[Tensor] | None = None,
    ) -> Tensor:
        """Logits for `tokens` [batch, T] at `positions` [T] (a tensor on the device); each layer's
        output is appended to `hidden` when a list is given (distillation compares them).

        Self-attention reads the first `length` cached positions when the caller knows that bound on
        the host (eager decoding, training), or else the whole cache under a mask (fixed shapes: a CUDA
        graph captures one step and replays it at every position, which advances on the device)."""
        dec = self.decoder
        x = dec.embed_tokens(tokens) + dec.embed_positions.weight.index_select(0, positions)
        keys = torch.arange(cache.max_len if length is None else length, device=tokens.device)
        # which cached positions each new token sees (none needed for one token that sees the whole prefix)
        visible = None if length is not None and len(positions) == 1 else keys[None] <= positions[:, None]
        for i, layer in enumerate(dec.layers):

            def self_attn(h, rows, i=i):
                return self.self_attention(i, h, rows, cache, positions, length, visible)

            def cross_attn(h, rows, i=i):
                return self.cross_attention(i, h, rows, cache)

            x = self._branch(x, self_attn, gates, f"dec.{i}.self_attn")
            x = self._branch(x, cross_attn, gates, f"dec.{i}.cross_attn")
            x = self._branch(x, lambda h, _rows, lay=layer: self.ffn(lay, h), gates, f"dec.{i}.ffn")
            if hidden is not None:
                hidden.append(x)
        return self.model.proj_out(dec.layer_norm(x))

    def self_attention(
        self,
        i: int,
        h: Tensor,
        rows: Tensor | None,
        cache: KVCache,
        positions: Tensor,
        length: int | None = None,
        visible: Tensor | None = None,
    ) -> Tensor:
        """Decoder layer `i`'s self-attention branch for `rows` (None: all): writes their K/V at
        `positions`, then attends over the cache (see `decode`)."""
        attn = self.decoder.layers[i].self_attn
        h = self.decoder.layers[i].self_attn_layer_norm(h)
        q, k, v = (_split_heads(p(h), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        cache.write(i, rows, positions, k, v)
        keys, values = cache.read(i, rows, length)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, scale=attn.scaling)
        return attn.out_proj(_merge_heads(out))

    def cross_attention(self, i: int, h: Tensor, rows: Tensor | None, cache: KVCache) -> Tensor:
        """Decoder layer `i`'s cross-attention branch for `rows` (None: all), over the cached K/V."""
        layer = self.decoder.layers[i]
        attn = layer.encoder_attn
        q = _split_heads(attn.q_proj(layer.encoder_attn_layer_norm(h)), attn.num_heads)
        return attn.out_proj(_merge_heads(cache.cross_attention(i, rows, q, attn.scaling)))
