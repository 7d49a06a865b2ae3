"""Loading a stack: int8 dynamic quantization on CPU, gate costs measured before it."""

import warnings

import pytest
import torch

from ctxprune.errors import CtxpruneError
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec, load_stack


def test_int8_quantizes_every_linear_and_still_decodes(tiny_model_dir):
    stack = load_stack(StackSpec(str(tiny_model_dir), int8=True))
    modules = list(stack.gated.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in modules)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules)
    feats = torch.randn(1, stack.gated.config.num_mel_bins, 3000)
    options = DecodeOptions(max_new_tokens=3)
    result = stack.run(feats, torch.tensor([3000]), ["transcribe"], ["de"], options=options)
    assert len(result.tokens) == 1 and len(result.tokens[0]) <= 3


def test_int8_loads_without_torch_notices(tiny_model_dir):
    # torch says its quantization API moves to torchao: a user of --int8 can do nothing about that
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_stack(StackSpec(str(tiny_model_dir), int8=True))
    assert not [str(w.message) for w in seen if "quantiz" in str(w.message)]


def test_int8_refuses_a_gpu(tiny_model_dir):
    with pytest.raises(CtxpruneError, match="CPU only"):
        load_stack(StackSpec(str(tiny_model_dir), device="cuda", int8=True))


def test_int8_gate_costs_are_measured_before_quantization(tiny_model_dir, monkeypatch):
    # regression: measured on the quantized model, FlopCounterMode saw no Linear layer and every
    # gate cost 0, so an int8 evaluation reported its sparsity as nan
    from ctxprune.models import whisper_costs

    monkeypatch.setattr(whisper_costs, "_CACHE", {})
    stack = load_stack(StackSpec(str(tiny_model_dir), int8=True))
    costs = stack.space.costs
    assert all(c.per_utterance + c.per_token > 0 for c in costs)


def test_gate_costs_of_a_quantized_model_are_refused(tiny_model_dir, monkeypatch):
    """Measuring on a quantized model would silently give near-zero costs (its Linear layers are invisible
    to FlopCounterMode): it is refused, whatever the module cache holds."""
    from ctxprune.models import whisper_costs
    from ctxprune.models.whisper import GatedWhisper

    monkeypatch.setattr(whisper_costs, "_CACHE", {})
    stack = load_stack(StackSpec(str(tiny_model_dir), int8=True))
    with pytest.raises(ValueError, match="before quantization"):
        whisper_costs.whisper_gate_space(GatedWhisper(stack.gated.model))
