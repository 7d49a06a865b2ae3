"""The long-form decoder equals HF's long-form `generate` (greedy, no fallback) segment for segment, with
sources decoded side by side; fallback and silence skipping follow the thresholds."""

import numpy as np
import pytest
import soundfile as sf
import torch

from ctxprune.data.features import log_mel
from ctxprune.gating.policy import DenseMasks
from ctxprune.longform.audio_stream import AudioStream
from ctxprune.longform.decoder import (
    GREEDY_LONG_FORM,
    Job,
    LongFormDecoder,
    LongFormOptions,
    compression_ratio,
)
from ctxprune.longform.sources import StreamedMel
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.runtime.pipeline import Pipeline


def _noise(path, seconds, seed):
    audio = np.random.default_rng(seed).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)
    sf.write(path, audio, 16000)
    return audio


def hf_long_form(model, audio, language, max_new_tokens=32, **kw):
    """HF's long-form segments of one file: (start, end, tokens)."""
    feats = log_mel(torch.from_numpy(audio)[None])  # equal to HF's feature extractor (tests/data)
    with torch.inference_mode():
        out = model.generate(
            feats, return_timestamps=True, return_segments=True, language=language, task="transcribe",
            max_new_tokens=max_new_tokens, **kw,
        )  # fmt: skip
    return [(float(s["start"]), float(s["end"]), s["tokens"].tolist()) for s in out["segments"][0]]


def _decoder(model, tokens, **kw):
    gw = GatedWhisper(model)
    return LongFormDecoder(Pipeline(gw, tokens, DenseMasks(whisper_gate_space(gw))), **kw)


@pytest.mark.parametrize("path", ["gather", "eager"])
def test_equals_hf_long_form_for_files_side_by_side(tiny_whisper, tiny_tokens, tmp_path, path):
    audios = [_noise(tmp_path / f"{i}.wav", s, i) for i, s in enumerate((36.3, 31.7))]
    short = DecodeOptions(path=path, max_new_tokens=32)  # a random model talks on: keep windows short
    decoder = _decoder(tiny_whisper, tiny_tokens, options=GREEDY_LONG_FORM, decode=short)
    jobs = [Job(i, StreamedMel(AudioStream(tmp_path / f"{i}.wav")), "en") for i in range(2)]
    finished = {job.key: job for job in decoder.run(jobs)}
    for i, audio in enumerate(audios):
        ours = [(s.start, s.end, s.tokens) for s in finished[i].spans]
        expected = hf_long_form(tiny_whisper, audio, "en")
        assert len(ours) > 2 and [t for *_, t in ours] == [t for *_, t in expected]
        assert np.allclose([x[:2] for x in ours], [x[:2] for x in expected])


def test_fallback_and_skipping_follow_the_thresholds(tiny_whisper, tiny_tokens, tmp_path):
    _noise(tmp_path / "a.wav", 33, 3)
    never = LongFormOptions((0.0, 0.5), compression_ratio_threshold=1e9, logprob_threshold=-1e9)
    always = LongFormOptions(
        (0.0, 0.5), compression_ratio_threshold=0.0, logprob_threshold=None, no_speech_threshold=None
    )
    silent = LongFormOptions((0.0,), logprob_threshold=0.0, no_speech_threshold=-1.0)
    temperatures = {}
    for name, options in (("never", never), ("always", always), ("silent", silent)):
        decoder = _decoder(
            tiny_whisper, tiny_tokens, options=options, decode=DecodeOptions(max_new_tokens=32, path="gather")
        )
        (job,) = decoder.run([Job(0, StreamedMel(AudioStream(tmp_path / "a.wav")), "en")])
        temperatures[name] = {s.window.temperature for s in job.spans}
        if name == "silent":
            assert job.spans == [] and job.skipped == 2  # both windows skipped as silence
    assert temperatures["never"] == {0.0} and temperatures["always"] == {0.5}


def test_compression_ratio_is_high_for_repeats():
    assert compression_ratio([1, 2, 3, 4, 5, 6, 7, 8], 51865) < 1.0
    assert compression_ratio([7, 8] * 50, 51865) > 2.4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_decode_long_form_as_the_gather_path(tiny_tokens, tmp_path):
    from tests.conftest import make_tiny_whisper

    model = make_tiny_whisper().cuda()
    for i, seconds in enumerate((36.3, 31.7)):
        _noise(tmp_path / f"{i}.wav", seconds, i)
    spans = {}
    for path in ("graphs", "gather"):
        decode = DecodeOptions(path=path, max_new_tokens=32)
        decoder = _decoder(model, tiny_tokens, options=GREEDY_LONG_FORM, decode=decode)
        jobs = [
            Job(i, StreamedMel(AudioStream(tmp_path / f"{i}.wav"), device="cuda"), "en") for i in range(2)
        ]
        spans[path] = {j.key: [(s.start, s.tokens) for s in j.spans] for j in decoder.run(jobs)}
    assert spans["graphs"] == spans["gather"] and len(spans["graphs"][0]) > 2
    sampled = _decoder(
        model, tiny_tokens, options=LongFormOptions((0.0, 1.0), compression_ratio_threshold=0.0)
    )
    (job,) = sampled.run([Job(0, StreamedMel(AudioStream(tmp_path / "0.wav"), device="cuda"), "en")])
    assert {s.window.temperature for s in job.spans} == {1.0}  # sampling inside the graphs ran


def test_a_pruned_window_that_loops_is_marked_as_the_teachers(
    tiny_whisper, tiny_tokens, tmp_path, pruned_rows_loop
):
    """The loop guard in long form: a window whose pruned decoding loops (forced here: the tiny model does
    not loop) carries the dense decoding, says so, and counts both decodings' FLOPs."""
    from ctxprune.gating.policy import RandomMasks
    from ctxprune.gating.random_gates import RandomGates

    _noise(tmp_path / "a.wav", 20, 4)
    gw = GatedWhisper(tiny_whisper)
    space = whisper_gate_space(gw)
    decode = DecodeOptions(max_new_tokens=32, path="gather", loop_guard=True)
    runs = {}
    for name, policy in (
        ("dense", DenseMasks(space)),
        ("pruned", RandomMasks(RandomGates(space, 0.5, "dec.", 0))),
    ):
        decoder = LongFormDecoder(Pipeline(gw, tiny_tokens, policy), options=GREEDY_LONG_FORM, decode=decode)
        (runs[name],) = decoder.run([Job(0, StreamedMel(AudioStream(tmp_path / "a.wav")), "en")])
    dense, pruned = runs["dense"].spans, runs["pruned"].spans
    assert [s.tokens for s in pruned] == [s.tokens for s in dense]  # the teacher's answer
    assert all(s.window.teacher for s in pruned) and not any(s.window.teacher for s in dense)
    assert all(s.window.flops_share > 1.0 for s in pruned)  # a pruned decoding, then a dense one


def test_a_gate_set_that_reads_the_speaker_gets_each_windows_own_vector(
    tiny_whisper, tiny_tokens, tmp_path, monkeypatch
):
    """Long form embeds each window's own samples (as evaluation embeds each utterance), so a gate set
    trained with the speaker vector decodes files; before, it was refused for want of the vector."""
    from ctxprune.data import speaker
    from ctxprune.gating.policy import policy_for
    from ctxprune.gating.predictor import GatePredictor
    from ctxprune.models.whisper_context import whisper_predictor_config

    _noise(tmp_path / "a.wav", 36.3, 5)
    samples, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    gw = GatedWhisper(tiny_whisper)
    context = ["task", "language", "audio", "encoder", speaker.SPEAKER]
    config = whisper_predictor_config(
        gw.config,
        whisper_gate_space(gw),
        ["en"],
        context=context,
        vectors={speaker.SPEAKER: speaker.SPEAKER_DIM},
    )
    seen = []
    real = speaker.embed
    monkeypatch.setattr(speaker, "embed", lambda chunks: seen.extend(chunks) or real(chunks, workers=1))
    decode = DecodeOptions(max_new_tokens=32, path="gather")
    policy = policy_for(GatePredictor(config).eval())
    decoder = LongFormDecoder(Pipeline(gw, tiny_tokens, policy), options=GREEDY_LONG_FORM, decode=decode)
    (job,) = decoder.run([Job(0, StreamedMel(AudioStream(tmp_path / "a.wav")), "en")])
    assert job.error is None and len(job.windows) == len(seen) >= 2
    starts = []
    for chunk in seen:  # each is the window's samples from its seek on, 30 s or to the end of the file
        start = next(
            s for s in range(0, len(samples), 160) if np.array_equal(samples[s : s + 160], chunk[:160])
        )
        assert len(chunk) == min(480000, len(samples) - start)
        np.testing.assert_array_equal(chunk, samples[start : start + len(chunk)])
        starts.append(start)
    assert starts[0] == 0 and starts == sorted(set(starts))
