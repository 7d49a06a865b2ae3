"""The CLI's bad-input contract: one clear line on stderr, a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest

from ctxprune.errors import CtxpruneError
from ctxprune.eval.librivox import librivox_references
from ctxprune.paths import ARTIFACTS, SHIPPED_ADAPTER

pytestmark = pytest.mark.real
CLI = [sys.executable, "-m", "ctxprune.cli"]


def run(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def _assert_clean_failure(proc, message):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def clip():
    return sorted(librivox_references())[1]


def test_help_on_every_command():
    for args in ([], ["transcribe"], ["model", "prepare"], ["demo"], ["eval"], ["bench"], ["report"]):
        proc = run(*args, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_json_output_has_one_record_per_file(clip):
    proc = run("transcribe", clip, clip, "--json", "--language", "en")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    assert set(records[0]) == {"path", "text", "segments", "language", "task", "duration", "seconds"}
    segment = records[0]["segments"][0]
    assert {"start", "end", "text", "tokens", "avg_logprob", "no_speech_prob"} <= set(segment)
    assert "young man" in records[0]["text"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["transcribe", "/nonexistent.wav"], "no such file"),
        (["transcribe", "{clip}", "--language", "xx"], "unknown language"),
        (["transcribe", "{clip}", "--task", "summarize"], "unknown task"),
        (["transcribe", "{clip}", "--model", "/tmp"], "not a model directory"),
        (["transcribe", "{clip}", "--beams", "0"], "--beams"),
        (["transcribe", "{clip}", "--dtype", "fp8"], "--dtype"),
        (["eval", "--data", "/nonexistent", "--json", "/tmp/x.json"], "/nonexistent"),
        (["eval", "--data", "/tmp", "--json", "/tmp/x.json", "--gates", "/tmp"], "not a gate set"),
        (["eval", "--data", "/tmp", "--json", "/tmp/x.json", "--random-where", "middle"], "--random-where"),
        (["bench", "--data", "/tmp", "--json", "/tmp/x.json", "--batch", "0"], "--batch"),
        (["report", "/nonexistent.json", "--out", "/tmp/r"], "/nonexistent.json"),
    ],
)
def test_bad_input(args, message, clip):
    _assert_clean_failure(run(*[a.format(clip=clip) for a in args]), message)


def test_beam_search_transcribes(clip):
    proc = run("transcribe", clip, "--language", "en", "--beams", "5")
    assert proc.returncode == 0, proc.stderr
    assert "young man" in proc.stdout


def test_batch_with_one_bad_file_reports_it_and_transcribes_the_rest(clip, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("plain text")
    proc = run("transcribe", bad, clip, "--language", "en")
    _assert_clean_failure(proc, "not a readable audio file")
    assert "young man" in proc.stdout


def _random_real_predictor(path, seed=0, **config):
    import torch

    from ctxprune import assets
    from ctxprune.gating.predictor import GatePredictor
    from ctxprune.models.whisper import GatedWhisper
    from ctxprune.models.whisper_context import whisper_predictor_config
    from ctxprune.models.whisper_costs import whisper_gate_space

    torch.manual_seed(seed)  # before the predictor is built: its weights are drawn here too
    gw = GatedWhisper(assets.load().model)
    p = GatePredictor(whisper_predictor_config(gw.config, whisper_gate_space(gw), ["en", "de"], **config))
    with torch.no_grad():
        p.late_bias.normal_(2.0, 2.0)  # mostly kept, some decoder branches skipped
        p.early_bias.fill_(3.0)
    p.save_pretrained(path)
    return p


def test_transcribe_with_gates_reports_mask_and_flops(clip, tmp_path):
    _random_real_predictor(tmp_path / "gates")
    proc = run("transcribe", clip, "--json", "--language", "en", "--gates", tmp_path / "gates")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    utterance = record["segments"][0]["gates"]  # the modules that ran for the segment's window
    assert 10 < len(utterance["ran"]) < 30 and all(name.startswith("enc.") for name in utterance["ran"][:12])
    assert 0.3 < utterance["flops_executed_share"] < 1.0


def test_a_gate_set_that_reads_the_speaker_transcribes_with_the_vector_of_its_audio(clip, tmp_path):
    """The speaker vector is computed from the audio (language detection's window too): a speaker gate
    set runs where it was refused before for want of the vector."""
    import torch

    from ctxprune.data.speaker import SPEAKER, SPEAKER_DIM

    context = ["task", "language", "audio", "encoder", SPEAKER]
    p = _random_real_predictor(tmp_path / "gates", context=context, vectors={SPEAKER: SPEAKER_DIM})
    with torch.no_grad():
        p.late_bias.fill_(4.0)  # keep every branch: random masks can silence a clip (logit > 0 either way)
    p.save_pretrained(tmp_path / "gates")
    proc = run("transcribe", clip, "--json", "--gates", tmp_path / "gates")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert "young man" in record["text"] and record["segments"][0]["gates"]["ran"]


def test_gates_for_another_model_are_refused(clip, tmp_path):
    from ctxprune.gating.predictor import GatePredictor
    from ctxprune.models.whisper import GatedWhisper
    from ctxprune.models.whisper_context import whisper_predictor_config
    from ctxprune.models.whisper_costs import whisper_gate_space
    from tests.conftest import make_tiny_whisper

    gw = GatedWhisper(make_tiny_whisper())
    GatePredictor(whisper_predictor_config(gw.config, whisper_gate_space(gw), ["en"])).save_pretrained(
        tmp_path
    )
    _assert_clean_failure(run("transcribe", clip, "--gates", tmp_path), "built for gate space")
    _assert_clean_failure(run("transcribe", clip, "--gates", tmp_path / "nope"), "not a gate predictor")


def test_every_candidate_runs_on_whisper_base_unless_an_adapter_is_given():
    # the shipped gate sets prune Whisper base itself (issue 15); an adapter is the user's choice
    from ctxprune.cli.evaluate import pick_candidates

    for gates, random in (
        ([], None),
        ([], [0.5]),
        ([ARTIFACTS / "gates" / "decoder-flops-0.5-static"], None),
    ):
        assert pick_candidates(gates, None, random, seeds=1)[1] is None
        assert pick_candidates(gates, SHIPPED_ADAPTER, random, seeds=1)[1] == SHIPPED_ADAPTER
    with pytest.raises(CtxpruneError, match="nothing to evaluate"):
        pick_candidates([], None, dense=False)
