"""Batches with a mask per row: grouping by decoder signature, the fixed-shape (graph) step, and the
row-gather fallback must all give the tokens each row gets when decoded alone."""

import pytest
import torch

from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.decoding import BatchDecoder, DecodeOptions

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
    decoder = BatchDecoder(gw, tokens)
    groups = decoder.groups(_mask(gw))
    assert sorted(rows for rows, _ in groups) == [[0, 3], [1], [2]]
    assert all(sig is not None for _, sig in groups)
    few = BatchDecoder(gw, tokens, DecodeOptions(max_groups=2)).groups(_mask(gw))
    assert few[0] == ([0, 3], few[0][1]) and few[-1] == ([1, 2], None)  # the rare two share a gather pass


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("max_groups", [4, 2])
def test_grouped_static_steps_equal_rows_alone(setup, beams, max_groups):
    gw, tokens, enc, prompts = setup
    mask = _mask(gw)
    decoder = BatchDecoder(gw, tokens, DecodeOptions(beams=beams, max_new_tokens=8, max_groups=max_groups))
    grouped = decoder(enc, prompts, mask, static_steps=True)
    gathered = decoder(enc, prompts, mask, static_steps=False)
    alone = [
        decoder(enc[r : r + 1], prompts[r : r + 1], mask[r : r + 1], static_steps=False)[0] for r in range(4)
    ]
    assert grouped == gathered == alone
    assert len({tuple(row) for row in alone}) > 1  # masks and inputs change the output


def test_graph_buffers_are_reused_across_utterances(setup):
    gw, tokens, enc, prompts = setup
    decoder = BatchDecoder(gw, tokens, DecodeOptions(max_new_tokens=8))
    mask = _mask(gw)
    first = decoder(enc, prompts, mask, static_steps=True)
    built = decoder.pool(False).keys_built
    reversed_rows = [3, 2, 1, 0]
    again = decoder(enc[reversed_rows], prompts[reversed_rows], mask[reversed_rows], static_steps=True)
    assert decoder.pool(False).keys_built == built  # same signatures and group sizes: no new buffers
    assert again == [first[r] for r in reversed_rows]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_steps_equal_eager_on_gpu(tiny_whisper, tiny_tokens, setup):
    _, tokens, enc, prompts = setup
    gw = GatedWhisper(tiny_whisper.to("cuda"))
    try:
        mask = _mask(gw)
        decoder = BatchDecoder(gw, tokens, DecodeOptions(max_new_tokens=8))
        graphed = decoder(enc.cuda(), prompts, mask)
        assert decoder.pool(True).keys_built == 3
        assert graphed == decoder(enc.cuda(), prompts, mask, static_steps=False)
    finally:
        tiny_whisper.to("cpu")
