"""Loading a pruned stack: int8 dynamic quantization on CPU."""

import pytest
import torch

from ctxprune.errors import CtxpruneError
from ctxprune.models.whisper_stack import load_stack


def test_int8_quantizes_every_linear_and_still_decodes(tiny_model_dir):
    stack = load_stack(str(tiny_model_dir), int8=True)
    modules = list(stack.gated.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in modules)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules)
    feats = torch.randn(1, stack.gated.config.num_mel_bins, 3000)
    result = stack.pruned.run(feats, torch.tensor([3000]), ["transcribe"], ["de"], max_new_tokens=3)
    assert len(result.tokens) == 1 and len(result.tokens[0]) <= 3


def test_int8_refuses_a_gpu(tiny_model_dir):
    with pytest.raises(CtxpruneError, match="CPU only"):
        load_stack(str(tiny_model_dir), device="cuda", int8=True)


def test_int8_gate_costs_are_measured_before_quantization(tiny_model_dir, monkeypatch):
    # regression: measured on the quantized model, FlopCounterMode saw no Linear layer and every
    # gate cost 0, so an int8 evaluation reported its sparsity as nan
    from ctxprune.models import whisper_costs

    monkeypatch.setattr(whisper_costs, "_CACHE", {})
    stack = load_stack(str(tiny_model_dir), int8=True)
    costs = stack.pruned.space.costs
    assert all(c.per_utterance + c.per_token > 0 for c in costs)
