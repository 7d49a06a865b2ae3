"""Whisper's gate costs, measured by FlopCounterMode on each branch as it runs."""

import torch

from ctxprune.models import whisper_costs
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import count_flops, whisper_gate_space

from ..conftest import make_tiny_whisper


def test_costs_have_the_parts_each_branch_pays(tiny_whisper):
    gw = GatedWhisper(tiny_whisper)
    space = whisper_gate_space(gw)
    d = gw.config.d_model
    costs = dict(zip(space.names, space.costs, strict=True))
    assert all(c.per_utterance > 0 and c.per_token == 0 for n, c in costs.items() if n.startswith("enc."))
    attn = costs["dec.0.self_attn"]
    assert attn.per_utterance == 0 and attn.per_token > 0
    cross = costs["dec.1.cross_attn"]
    assert cross.per_utterance > 0 and cross.per_token > 0 and cross.per_token_position == 0
    frames = torch.zeros(1, gw.config.max_source_positions, d)
    assert costs["enc.0.ffn"].per_utterance == count_flops(lambda: gw.ffn(gw.encoder.layers[0], frames))


def test_costs_are_measured_once_per_model_shape(tiny_whisper, monkeypatch):
    monkeypatch.setattr(whisper_costs, "_CACHE", {})
    first = whisper_gate_space(GatedWhisper(tiny_whisper))
    assert whisper_gate_space(GatedWhisper(make_tiny_whisper(seed=1))) is first  # same shape, other weights
    other = whisper_gate_space(GatedWhisper(make_tiny_whisper(layers=3)))
    assert other is not first and len(other) == 3 * 2 + 3 * 3
