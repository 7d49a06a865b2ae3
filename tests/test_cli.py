"""The CLI's bad-input contract: one clear line on stderr, a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest

from ctxprune.eval.librivox import librivox_references

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
    for args in ([], ["transcribe"], ["model", "prepare"], ["demo"]):
        proc = run(*args, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_json_output_has_one_record_per_file(clip):
    proc = run("transcribe", clip, clip, "--json", "--language", "en")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    assert set(records[0]) == {"path", "text", "language", "task", "duration", "seconds"}
    assert "young man" in records[0]["text"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["transcribe", "/nonexistent.wav"], "no such file"),
        (["transcribe", "{clip}", "--language", "xx"], "unknown language"),
        (["transcribe", "{clip}", "--task", "summarize"], "unknown task"),
        (["transcribe", "{clip}", "--model", "/tmp"], "not a model directory"),
    ],
)
def test_bad_input(args, message, clip):
    _assert_clean_failure(run(*[a.format(clip=clip) for a in args]), message)


def test_batch_with_one_bad_file_reports_it_and_transcribes_the_rest(clip, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("plain text")
    proc = run("transcribe", bad, clip, "--language", "en")
    _assert_clean_failure(proc, "not a readable audio file")
    assert "young man" in proc.stdout
