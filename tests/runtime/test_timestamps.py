"""Whisper's timestamp rules on device state equal HF's `WhisperTimeStampLogitsProcessor`, and timestamp
decoding on every path equals HF `generate(return_timestamps=True)`."""

import pytest
import torch
from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

from ctxprune.gating.policy import DenseMasks
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.runtime.pipeline import Pipeline
from ctxprune.runtime.timestamps import TimestampRules, sample

VOCAB = 51865


def _histories(tokens, begin):
    """Generated rows that mix text, lone timestamps and pairs, increasing timestamps."""
    g = torch.Generator().manual_seed(3)
    rows = []
    for r in range(6):
        row, t = [], begin + r
        for _ in range(r + 3):
            if torch.rand(1, generator=g) < 0.4:
                t += int(torch.randint(0, 20, (1,), generator=g))
                row.append(t)
            else:
                row.append(int(torch.randint(0, tokens.eot, (1,), generator=g)))
        rows.append(row)
    return rows


@pytest.mark.parametrize("length", [0, 1, 2, 3, 5])
def test_rules_equal_hf_processor(tiny_whisper, tiny_tokens, length):
    histories = [h[:length] for h in _histories(tiny_tokens, tiny_tokens.timestamp_begin)]
    histories = [h for h in histories if len(h) == length]
    prompt = tiny_tokens.prompt("en", "transcribe", timestamps=True)
    hf = WhisperTimeStampLogitsProcessor(tiny_whisper.generation_config, begin_index=len(prompt))
    scores = torch.randn(len(histories), VOCAB, generator=torch.Generator().manual_seed(length)) * 3
    expected = hf(torch.tensor([prompt + h for h in histories]), scores)
    rules = TimestampRules(tiny_tokens, VOCAB, len(histories), "cpu")
    rules.reset(torch.zeros(len(histories), VOCAB))
    done = torch.zeros(len(histories), dtype=torch.bool)
    for step in range(length):
        chosen = torch.tensor([h[step] for h in histories])
        rules.record(torch.zeros(len(histories), VOCAB), chosen, done)
    assert torch.equal(rules(scores, first=length == 0), expected)


def test_sampling_follows_the_distribution():
    torch.manual_seed(0)
    scores = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20000, 1)
    counts = torch.bincount(sample(scores, 1.0), minlength=3) / 20000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)
    assert torch.equal(sample(scores, 0.0), torch.zeros(20000, dtype=torch.long))


@pytest.mark.parametrize("path", ["gather", "eager"])
def test_timestamp_decoding_equals_hf(tiny_whisper, tiny_tokens, random_features, path):
    gw = GatedWhisper(tiny_whisper)
    pipeline = Pipeline(gw, tiny_tokens, DenseMasks(whisper_gate_space(gw)))
    options = DecodeOptions(max_new_tokens=24, path=path, timestamps=True)
    frames = torch.full((4,), 3000)
    languages = ["en", "de", "fr", "en"]
    result = pipeline.run(random_features, frames, ["transcribe"] * 4, languages, options=options)
    with torch.inference_mode():
        expected = [
            tiny_whisper.generate(
                f[None],
                language=lang,
                task="transcribe",
                return_timestamps=True,
                max_new_tokens=24,
                force_unique_generate_call=True,  # one pass, as the runtime decodes a window
            )[0].tolist()
            for f, lang in zip(random_features, languages, strict=True)
        ]
    expected = [tiny_tokens.until_end(row[3:]) for row in expected]  # after <|sot|><|lang|><|task|>
    assert result.tokens == expected
    assert any(t >= tiny_tokens.timestamp_begin for row in result.tokens for t in row)
    sums = [s for s, _, _ in result.scores]
    assert all(s < 0 for s in sums) and all(0 <= p <= 1 for _, _, p in result.scores)


def test_beam_search_with_timestamps_equals_hf(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    pipeline = Pipeline(gw, tiny_tokens, DenseMasks(whisper_gate_space(gw)))
    options = DecodeOptions(beams=3, max_new_tokens=16, path="gather", timestamps=True)
    result = pipeline.run(
        random_features[:2], torch.full((2,), 3000), ["transcribe"] * 2, ["en", "de"], options=options
    )
    with torch.inference_mode():
        expected = [
            tiny_whisper.generate(
                f[None], language=lang, task="transcribe", return_timestamps=True, max_new_tokens=16,
                num_beams=3, do_sample=False, force_unique_generate_call=True,
            )[0].tolist()
            for f, lang in zip(random_features[:2], ["en", "de"], strict=True)
        ]  # fmt: skip
    assert result.tokens == [tiny_tokens.until_end(row[3:]) for row in expected]
    assert all(t >= tiny_tokens.timestamp_begin for t in (row[0] for row in result.tokens))
