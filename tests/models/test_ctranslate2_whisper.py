"""The CTranslate2 -> HF converter, checked by round trip: a tiny HF model is written in CTranslate2's
layout (fused q/k/v and k/v, float16) by an independent writer below, then converted back."""

import struct

import numpy as np
import pytest
import torch

from ctxprune.errors import CtxpruneError
from ctxprune.models.ctranslate2_whisper import convert_ctranslate2_whisper, read_ctranslate2

from ..conftest import make_tiny_whisper


def _write_ct2(path, variables: dict[str, np.ndarray], aliases: dict[str, str], spec="WhisperSpec"):
    dtype_ids = {np.dtype(np.float16): 4, np.dtype(np.int16): 2, np.dtype(np.int8): 1}

    def string(f, s):
        f.write(struct.pack("<H", len(s) + 1) + s.encode() + b"\0")

    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6))
        string(f, spec)
        f.write(struct.pack("<II", 3, len(variables)))
        for name, a in variables.items():
            string(f, name)
            f.write(struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", d) for d in a.shape))
            f.write(struct.pack("<BI", dtype_ids[a.dtype], a.nbytes) + a.tobytes())
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            string(f, alias)
            string(f, target)


def _ct2_layout(model) -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    c = model.config
    v = {
        "encoder/num_heads": np.array(c.encoder_attention_heads, np.int16),
        "decoder/num_heads": np.array(c.decoder_attention_heads, np.int16),
        "decoder/embeddings/weight": sd["model.decoder.embed_tokens.weight"],
        "decoder/position_encodings/encodings": sd["model.decoder.embed_positions.weight"],
        "encoder/position_encodings/encodings": sd["model.encoder.embed_positions.weight"],
    }
    for i in (1, 2):
        v[f"encoder/conv{i}/weight"] = sd[f"model.encoder.conv{i}.weight"]
        v[f"encoder/conv{i}/bias"] = sd[f"model.encoder.conv{i}.bias"]

    def ln(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(dst, w, b):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = w, b

    def fused_self(src, dst):
        zeros = np.zeros_like(sd[f"{src}.q_proj.bias"])
        w = np.concatenate([sd[f"{src}.{p}_proj.weight"] for p in "qkv"])
        lin(f"{dst}/linear_0", w, np.concatenate([sd[f"{src}.q_proj.bias"], zeros, sd[f"{src}.v_proj.bias"]]))
        lin(f"{dst}/linear_1", sd[f"{src}.out_proj.weight"], sd[f"{src}.out_proj.bias"])

    for side, n in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        for i in range(n):
            src, dst = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            ln(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
            fused_self(f"{src}.self_attn", f"{dst}/self_attention")
            ln(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")
            lin(f"{dst}/ffn/linear_0", sd[f"{src}.fc1.weight"], sd[f"{src}.fc1.bias"])
            lin(f"{dst}/ffn/linear_1", sd[f"{src}.fc2.weight"], sd[f"{src}.fc2.bias"])
            if side == "decoder":
                a, d = f"{src}.encoder_attn", f"{dst}/attention"
                ln(f"{src}.encoder_attn_layer_norm", f"{d}/layer_norm")
                lin(f"{d}/linear_0", sd[f"{a}.q_proj.weight"], sd[f"{a}.q_proj.bias"])
                kv_w = np.concatenate([sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]])
                kv_b = np.concatenate([np.zeros_like(sd[f"{a}.v_proj.bias"]), sd[f"{a}.v_proj.bias"]])
                lin(f"{d}/linear_1", kv_w, kv_b)
                lin(f"{d}/linear_2", sd[f"{a}.out_proj.weight"], sd[f"{a}.out_proj.bias"])
        ln(f"model.{side}.layer_norm", f"{side}/layer_norm")
    return v


def test_round_trip_reproduces_every_weight(tmp_path):
    original = make_tiny_whisper(seed=3, tied=True)
    path = tmp_path / "model.bin"
    _write_ct2(path, _ct2_layout(original), {"decoder/projection/weight": "decoder/embeddings/weight"})
    spec, variables = read_ctranslate2(path)
    assert spec == "WhisperSpec" and "decoder/projection/weight" in variables
    converted = convert_ctranslate2_whisper(path, {"suppress_ids": [1], "suppress_ids_begin": [220]})
    ref = original.state_dict()
    got = converted.state_dict()
    assert set(got) == set(ref)
    for name, tensor in ref.items():
        torch.testing.assert_close(got[name], tensor.half().float(), rtol=0, atol=0, msg=name)
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()
    assert converted.config.encoder_attention_heads == original.config.encoder_attention_heads


def test_rejects_other_specs_and_truncated_files(tmp_path):
    path = tmp_path / "model.bin"
    _write_ct2(path, {"x": np.zeros(2, np.float16)}, {}, spec="TransformerSpec")
    with pytest.raises(CtxpruneError, match="WhisperSpec"):
        convert_ctranslate2_whisper(path, {})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CtxpruneError, match="truncated"):
        read_ctranslate2(path)
