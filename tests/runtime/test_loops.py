"""The loop guard: which token sequences it calls a loop, and that decoding stops there on every path."""

from dataclasses import replace

import pytest
import torch

from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.decoding import BatchDecoding, DecodeOptions
from ctxprune.runtime.loops import LoopGuard


def _first_loop(sequence: list[int]) -> int | None:
    """The 1-based step at which the guard stops `sequence`, or None."""
    guard = LoopGuard(1, torch.device("cpu"))
    ended = torch.zeros(1, dtype=torch.bool)
    for step, token in enumerate(sequence, 1):
        if guard(torch.tensor([token]), ended).item():
            return step
    return None


@pytest.mark.parametrize(
    ("period", "stops_at"),
    [(1, 24), (2, 24), (8, 24), (10, 30), (20, 60), (32, 96)],  # max(24 tokens, three copies)
)
def test_a_repeated_block_stops_at_three_copies_and_24_tokens(period, stops_at):
    block = list(range(100, 100 + period))
    prefix = [1, 2, 3, 4, 5]  # text before the loop does not count toward it
    assert _first_loop(prefix + block * (100 // period + 1)) == len(prefix) + stops_at


def test_text_that_does_not_repeat_or_repeats_briefly_runs_on():
    assert _first_loop(list(range(200))) is None
    # "no, no, no, no, no" (10 tokens of period 2) inside ordinary text is speech, not a loop
    assert _first_loop(list(range(20)) + [7, 8] * 5 + list(range(300, 340))) is None
    # two copies of a sentence are not a loop either
    sentence = list(range(500, 520))
    assert _first_loop(sentence * 2 + list(range(600, 640))) is None
    # a period longer than 32 tokens is never called a loop
    assert _first_loop(list(range(700, 733)) * 5) is None


def test_rows_that_ended_never_loop_and_rows_are_independent():
    guard = LoopGuard(2, torch.device("cpu"))
    ended = torch.tensor([True, False])
    hits = [guard(torch.tensor([50257, 9]), ended) for _ in range(30)]  # end-of-text fed to row 0
    assert not any(h[0] for h in hits) and hits[23][1] and not hits[22][1]
    assert guard.looped.tolist() == [False, True]
    guard.reset()
    assert guard.looped.tolist() == [False, False]


@pytest.fixture(scope="module")
def looping(tiny_whisper, tiny_tokens):
    """A tiny Whisper whose decoder always picks the same token after the first step: its final layer
    norm outputs a constant (a scaled token embedding), so the logits never change."""
    from ..conftest import make_tiny_whisper

    model = make_tiny_whisper(seed=1)
    norm = model.model.decoder.layer_norm
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.copy_(model.model.decoder.embed_tokens.weight[1234] * 10)
    gw = GatedWhisper(model)
    torch.manual_seed(0)
    with torch.inference_mode():
        enc = gw.encode(torch.randn(3, 80, 3000))
    prompts = torch.tensor([tiny_tokens.prompt(lang, "transcribe") for lang in ("de", "fr", "es")])
    return gw, tiny_tokens, enc, prompts


@pytest.mark.parametrize("path", ["gather", "eager"])
def test_a_looping_decoder_stops_early_with_the_guard(looping, path):
    gw, tokens, enc, prompts = looping
    decoding = BatchDecoding(gw, tokens)
    mask = torch.ones(3, len(gw.gate_names), dtype=torch.bool)
    mask[1, gw.gate_names.index("dec.0.ffn")] = False  # two signatures: two lanes on the eager path
    options = DecodeOptions(max_new_tokens=100, path=path)
    unguarded = decoding.decode(enc, prompts, mask, options)
    guarded = decoding.decode(enc, prompts, mask, replace(options, loop_guard=True))
    assert all(len(row) == 100 for row in unguarded.tokens) and not any(unguarded.looped)
    assert guarded.looped == [True, True, True]
    for row, full in zip(guarded.tokens, unguarded.tokens, strict=True):
        assert 24 <= len(row) <= 25 and row == full[: len(row)]  # the same tokens, cut where the loop shows
        assert len(set(row[-24:])) == 1  # one token, 24 times


def test_the_guard_refuses_beam_search():
    from ctxprune.errors import CtxpruneError

    with pytest.raises(CtxpruneError, match="one beam"):
        DecodeOptions(beams=5, loop_guard=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_stop_loops_as_eager_on_gpu(looping):
    gw, tokens, enc, prompts = looping
    gw.model.to("cuda")
    try:
        decoding = BatchDecoding(gw, tokens)
        mask = torch.ones(3, len(gw.gate_names), dtype=torch.bool)
        options = DecodeOptions(max_new_tokens=100, loop_guard=True)
        graphed = decoding.decode(enc.cuda(), prompts.cuda(), mask, options)
        eager = decoding.decode(enc.cuda(), prompts.cuda(), mask, replace(options, path="gather"))
        assert graphed == eager and graphed.looped == [True] * 3
        again = decoding.decode(enc.cuda(), prompts.cuda(), mask, options)  # replayed: the guard was reset
        assert again == graphed
    finally:
        gw.model.to("cpu")
