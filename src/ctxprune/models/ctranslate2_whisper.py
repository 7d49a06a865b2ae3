"""Read a CTranslate2 Whisper `model.bin` and turn it into a Hugging Face `WhisperForConditionalGeneration`.

CTranslate2's binary format is a flat list of named arrays (version 6: name, rank, shape, dtype id,
byte count, raw bytes, then aliases). It holds no pickles, so reading it with `struct` and numpy is
safe. CTranslate2 fuses q/k/v (self-attention) and k/v (cross-attention) into one Linear each and
ties the output projection to the token embedding; we split and untie-by-reference accordingly.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from ctxprune.errors import CtxpruneError

# CTranslate2 DataType ids (include/ctranslate2/types.h).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_BINARY_VERSIONS = (5, 6)


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise CtxpruneError("CTranslate2 model file is truncated; re-run `ctxprune model prepare --force`")
    return struct.unpack("<" + fmt, data)[0]


def _read_string(f: BinaryIO) -> str:
    n = _read(f, "H")
    return f.read(n)[:-1].decode("utf-8")


def read_ctranslate2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return the spec name and every variable (aliases resolved) of a CTranslate2 model file."""
    with open(path, "rb") as f:
        version = _read(f, "I")
        if version not in _SUPPORTED_BINARY_VERSIONS:
            raise CtxpruneError(f"{path}: CTranslate2 binary version {version} is not supported")
        spec = _read_string(f)
        _read(f, "I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(_read(f, "I")):
            name = _read_string(f)
            shape = [_read(f, "I") for _ in range(_read(f, "B"))]
            dtype_id = _read(f, "B")
            nbytes = _read(f, "I")
            if dtype_id not in _DTYPES:
                raise CtxpruneError(f"{path}: variable {name} has unsupported dtype id {dtype_id}")
            raw = f.read(nbytes)
            variables[name] = np.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(shape)
        for _ in range(_read(f, "I")):
            alias, target = _read_string(f), _read_string(f)
            variables[alias] = variables[target]
    return spec, variables


def _config_from_variables(v: dict[str, np.ndarray], extra: dict) -> WhisperConfig:
    vocab, d_model = v["decoder/embeddings/weight"].shape
    n_enc = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    n_dec = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=50258,
        bos_token_id=50257,
        eos_token_id=50257,
        pad_token_id=50257,
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [220, 50257])),
        suppress_tokens=list(extra.get("suppress_ids", [])),
        tie_word_embeddings=True,
    )


def _attention(sd: dict, v: dict, src: str, dst: str, d: int, cross: bool) -> None:
    """Split CTranslate2's fused projections into HF's q/k/v/out. Whisper's k_proj has no bias."""
    if cross:
        q_w, q_b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        kv_w, kv_b = v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"]
        k_w, v_w, v_b = kv_w[:d], kv_w[d:], kv_b[d:]
        out = "linear_2"
    else:
        w, b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        q_w, k_w, v_w = w[:d], w[d : 2 * d], w[2 * d :]
        q_b, v_b = b[:d], b[2 * d :]
        out = "linear_1"
    sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = q_w, q_b
    sd[f"{dst}.k_proj.weight"] = k_w
    sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = v_w, v_b
    sd[f"{dst}.out_proj.weight"] = v[f"{src}/{out}/weight"]
    sd[f"{dst}.out_proj.bias"] = v[f"{src}/{out}/bias"]


def _layer_norm(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _ffn(sd: dict, v: dict, src: str, dst: str) -> None:
    for i, name in enumerate(("fc1", "fc2")):
        sd[f"{dst}.{name}.weight"] = v[f"{src}/linear_{i}/weight"]
        sd[f"{dst}.{name}.bias"] = v[f"{src}/linear_{i}/bias"]


def _layer(sd: dict, v: dict, src: str, dst: str, d: int, cross: bool) -> None:
    """One encoder layer, or with `cross` one decoder layer (which adds cross-attention)."""
    _layer_norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    _attention(sd, v, f"{src}/self_attention", f"{dst}.self_attn", d, cross=False)
    if cross:
        _layer_norm(sd, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        _attention(sd, v, f"{src}/attention", f"{dst}.encoder_attn", d, cross=True)
    _layer_norm(sd, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _ffn(sd, v, f"{src}/ffn", dst)


def convert_ctranslate2_whisper(
    model_bin: Path, extra_config: dict, dtype: torch.dtype = torch.float32
) -> WhisperForConditionalGeneration:
    """Build an HF Whisper model whose weights are exactly those of a CTranslate2 `WhisperSpec` file."""
    spec, v = read_ctranslate2(model_bin)
    if spec != "WhisperSpec":
        raise CtxpruneError(f"{model_bin}: expected a CTranslate2 WhisperSpec model, found {spec!r}")
    config = _config_from_variables(v, extra_config)
    d = config.d_model
    sd: dict[str, np.ndarray] = {}
    for i in (1, 2):
        sd[f"model.encoder.conv{i}.weight"] = v[f"encoder/conv{i}/weight"]
        sd[f"model.encoder.conv{i}.bias"] = v[f"encoder/conv{i}/bias"]
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(config.encoder_layers):
        _layer(sd, v, f"encoder/layer_{i}", f"model.encoder.layers.{i}", d, cross=False)
    _layer_norm(sd, v, "encoder/layer_norm", "model.encoder.layer_norm")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(config.decoder_layers):
        _layer(sd, v, f"decoder/layer_{i}", f"model.decoder.layers.{i}", d, cross=True)
    _layer_norm(sd, v, "decoder/layer_norm", "model.decoder.layer_norm")

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.array(a)).to(dtype) for k, a in sd.items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CtxpruneError(f"conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    return model.eval()
