"""The corpus builder, through the CLI as a user runs it, on the `small` preset."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctxprune.data import corpus as corpus_module
from ctxprune.data.corpus import SPLITS, UNSEEN_VOICES, BuildConfig, build
from ctxprune.data.manifest import FIELDS, check, read_manifest, stats
from ctxprune.errors import CtxpruneError


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ctxprune.cli", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    proc = cli("data", "build", "--out", out, "--preset", "small", "--seed", "7", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "synthesized" in proc.stdout and "test_unseen_voice" in proc.stdout
    return out


def _audio_hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("audio/*/*.flac"))}


def test_manifests_have_every_field_and_both_tasks(small):
    for split in SPLITS:
        rows = [json.loads(line) for line in (small / f"{split}.jsonl").read_text().splitlines()]
        assert rows and all(set(r) == set(FIELDS) for r in rows)
        assert {r["language"] for r in rows} == {"en", "de", "fr", "es", "it"}
        assert not any(r["language"] == "en" and r["task"] == "translate" for r in rows)
        for r in rows:
            assert r["text"] == r["english"] if r["language"] == "en" else r["text"] != r["english"]
    counts = {(r["split"], r["language"], r["task"]): r["utterances"] for r in stats(small)}
    assert counts[("test", "de", "translate")] == counts[("test", "de", "transcribe")] == 4


def test_splits_are_disjoint(small):
    english = {split: {e.english.casefold() for e in read_manifest(small, split)} for split in SPLITS}
    audio = {split: {e.audio for e in read_manifest(small, split)} for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not english[a] & english[b], (a, b)
            assert not audio[a] & audio[b], (a, b)


def test_unseen_voices_are_unseen_and_train_has_male_and_female(small):
    voices = {split: {e.voice for e in read_manifest(small, split)} for split in SPLITS}
    assert voices["test_unseen_voice"] <= set(UNSEEN_VOICES)
    assert not (voices["train"] | voices["dev"] | voices["test"]) & set(UNSEEN_VOICES)
    assert any(v.startswith("m") for v in voices["train"]) and any(v.startswith("f") for v in voices["train"])


def test_audio_is_16k_flac_that_checks_out(small):
    import soundfile as sf

    info = sf.info(str(next(small.glob("audio/de/*.flac"))))
    assert info.samplerate == 16000 and info.format == "FLAC" and info.channels == 1
    assert check(small) == []
    proc = cli("data", "check", small)
    assert proc.returncode == 0 and "every file exists" in proc.stdout


def test_same_seed_same_manifests_and_audio(small, tmp_path):
    again = tmp_path / "again"
    build(again, BuildConfig(preset="small", seed=7), workers=1)
    for split in SPLITS:
        assert (again / f"{split}.jsonl").read_bytes() == (small / f"{split}.jsonl").read_bytes()
    assert _audio_hashes(again) == _audio_hashes(small)


def test_resume_redoes_only_what_is_missing(tmp_path):
    out = tmp_path / "c"
    config = BuildConfig(languages=("de",), preset="small", seed=1)
    build(out, config, workers=1)
    victim = sorted(out.glob("audio/de/*.flac"))[3]
    before = victim.read_bytes()
    victim.unlink()
    record = build(out, config, workers=1)
    assert record["synthesis_runs"][-1]["utterances"] == 1
    assert victim.read_bytes() == before


def test_other_config_is_refused_unless_resume_or_force(tmp_path):
    out = tmp_path / "c"
    build(out, BuildConfig(languages=("it",), preset="small", seed=1), workers=1)
    other = BuildConfig(languages=("it",), preset="small", seed=2)
    with pytest.raises(CtxpruneError, match="--resume .* --force"):
        build(out, other)
    build(out, other, force=True)
    assert json.loads((out / "build.json").read_text())["config"]["seed"] == 2
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(CtxpruneError, match="not empty"):
        build(tmp_path / "junk", other)


def test_bad_input_errors(tmp_path, monkeypatch):
    proc = cli("data", "build", "--out", tmp_path / "x", "--languages", "en,tlh")
    assert (
        proc.returncode == 1
        and "supported: en, de, fr, es, it" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    monkeypatch.setattr(
        corpus_module,
        "espeak_binary",
        lambda: (_ for _ in ()).throw(
            CtxpruneError("espeak-ng is not installed; run `apt-get install espeak-ng`")
        ),
    )
    with pytest.raises(CtxpruneError, match="apt-get install espeak-ng"):
        build(tmp_path / "y", BuildConfig(preset="small"))
