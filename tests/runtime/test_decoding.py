"""Batches with a mask per row: grouping by decoder signature, the fixed-shape (graph) step, and the
row-gather fallback must all give the tokens each row gets when decoded alone."""

from dataclasses import replace

import pytest
import torch

from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.decoding import BatchDecoding, DecodeOptions, decoder_signature

# per row: the branches it skips; rows 0 and 3 share a decoder signature (row 3 differs in the encoder)
OFF = [
    [],
    ["dec.0.self_attn", "dec.1.ffn", "dec.1.cross_attn"],
    ["dec.0.cross_attn", "dec.1.ffn", "dec.1.self_attn"],
    ["enc.0.attn"],
]


def _mask(gw, rows=OFF) -> torch.Tensor:
    return torch.tensor([[name not in off for name in gw.gate_names] for off in rows])


@pytest.fixture(scope="module")
def setup(tiny_whisper, tiny_tokens):
    gw = GatedWhisper(tiny_whisper)
    torch.manual_seed(3)
    feats = torch.randn(len(OFF), 80, 3000) * torch.tensor([0.1, 1.0, 3.0, 0.5])[:, None, None]
    with torch.inference_mode():
        enc = gw.encode(feats)
    prompts = torch.tensor([tiny_tokens.prompt(lang, "transcribe") for lang in ("de", "fr", "es", "it")])
    return gw, tiny_tokens, enc, prompts


def test_groups_by_decoder_signature(setup):
    gw, tokens, _, _ = setup
    decoding = BatchDecoding(gw, tokens)
    groups = decoding.groups(_mask(gw), max_groups=8)
    assert sorted(rows for rows, _ in groups) == [[0, 3], [1], [2]]
    assert all(sig is not None for _, sig in groups)
    few = decoding.groups(_mask(gw), max_groups=2)
    row0 = decoder_signature(_mask(gw)[0].tolist(), decoding.decoder_gate)
    assert few[0] == ([0, 3], row0) and few[-1] == ([1, 2], None)  # the rare two share a gather pass
    assert row0 == decoder_signature(_mask(gw)[3].tolist(), decoding.decoder_gate)  # encoder gates ignored
    # no groups: every row gathers (before, all signatures but the rarest went to the fixed-shape pool,
    # whose KV caches then grew a CPU evaluation of a gate set to 23 GB)
    assert decoding.groups(_mask(gw), max_groups=0) == [([0, 1, 2, 3], None)]


def test_the_gather_path_builds_no_fixed_shape_steps(setup):
    gw, tokens, enc, prompts = setup
    decoding = BatchDecoding(gw, tokens)
    decoding(enc, prompts, _mask(gw), DecodeOptions(max_new_tokens=4, path="gather"))
    assert decoding.pool(False).keys_built == decoding.pool(True).keys_built == 0


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("max_groups", [4, 2])
def test_grouped_fixed_shape_steps_equal_rows_alone(setup, beams, max_groups):
    gw, tokens, enc, prompts = setup
    mask = _mask(gw)
    decoding = BatchDecoding(gw, tokens)
    options = DecodeOptions(beams=beams, max_new_tokens=8, max_groups=max_groups, path="eager")
    gather = replace(options, path="gather")
    grouped = decoding(enc, prompts, mask, options)
    gathered = decoding(enc, prompts, mask, gather)
    alone = [decoding(enc[r : r + 1], prompts[r : r + 1], mask[r : r + 1], gather)[0] for r in range(4)]
    assert grouped == gathered == alone
    assert len({tuple(row) for row in alone}) > 1  # masks and inputs change the output


def test_graph_buffers_are_reused_across_utterances(setup):
    gw, tokens, enc, prompts = setup
    decoding = BatchDecoding(gw, tokens)
    options = DecodeOptions(max_new_tokens=8, path="eager")
    mask = _mask(gw)
    first = decoding(enc, prompts, mask, options)
    built = decoding.pool(False).keys_built
    reversed_rows = [3, 2, 1, 0]
    again = decoding(enc[reversed_rows], prompts[reversed_rows], mask[reversed_rows], options)
    assert decoding.pool(False).keys_built == built  # same signatures and group sizes: no new buffers
    assert again == [first[r] for r in reversed_rows]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_steps_equal_eager_on_gpu(tiny_whisper, tiny_tokens, setup):
    _, tokens, enc, prompts = setup
    gw = GatedWhisper(tiny_whisper.to("cuda"))
    try:
        mask = _mask(gw)
        decoding = BatchDecoding(gw, tokens)
        options = DecodeOptions(max_new_tokens=8)
        graphed = decoding(enc.cuda(), prompts, mask, options)
        assert decoding.pool(True).keys_built == 3
        assert graphed == decoding(enc.cuda(), prompts, mask, replace(options, path="gather"))
    finally:
        tiny_whisper.to("cpu")
