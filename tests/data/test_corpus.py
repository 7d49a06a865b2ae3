"""The corpus builder, through the CLI as a user runs it, on the `small` preset."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctxprune.data.corpus import PICO_UNSEEN_PROSODY, SPLITS, UNSEEN_VOICES, BuildConfig, build, plan
from ctxprune.data.manifest import FIELDS, check, read_manifest, stats
from ctxprune.data.voices import MBROLA_VOICES
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
    english = {
        split: {e.english.casefold() for e in read_manifest(small, split) if e.english is not None}
        for split in SPLITS
    }
    audio = {split: {e.audio for e in read_manifest(small, split)} for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not english[a] & english[b], (a, b)
            assert not audio[a] & audio[b], (a, b)


def test_unseen_voices_are_unseen_and_train_has_male_and_female(small):
    voices = {split: {(e.family, e.voice) for e in read_manifest(small, split)} for split in SPLITS}
    held_out = {("espeak", v) for v in UNSEEN_VOICES} | {("mbrola", v[1]) for v in MBROLA_VOICES.values()}
    pico = {("pico", v) for v in ("en-US", "de-DE", "fr-FR", "es-ES", "it-IT")}
    assert voices["test_unseen_voice"] <= held_out | pico
    assert not (voices["train"] | voices["dev"] | voices["test"]) & held_out
    espeak = {v for f, v in voices["train"] if f == "espeak"}
    assert any(v.startswith("m") for v in espeak) and any(v.startswith("f") for v in espeak)
    prosody = {split: set() for split in SPLITS}  # Pico keeps one voice per language: prosody is held out
    for line in (small / "plan.jsonl").read_text().splitlines():
        u = json.loads(line)
        if u.get("family") == "pico":
            prosody[u["split"]].add((u["speed"], u["pitch"]))
    assert prosody["test_unseen_voice"] and prosody["test_unseen_voice"] <= set(PICO_UNSEEN_PROSODY)
    assert not (prosody["train"] | prosody["dev"] | prosody["test"]) & set(PICO_UNSEEN_PROSODY)


def test_every_family_speaks_and_monolingual_rows_train_only(small):
    families = {split: {e.family for e in read_manifest(small, split)} for split in SPLITS}
    assert families["train"] == {"pico", "mbrola", "espeak"}
    rows = read_manifest(small, "train", with_reference=False)
    mono = [e for e in rows if e.english is None]
    assert {e.language for e in mono} <= {"de", "es", "it", "fr"} and mono
    assert all(not e.has_reference for e in mono if e.task == "translate")
    assert all(e.has_reference and e.target == e.text for e in mono if e.task == "transcribe")
    with_reference = read_manifest(small, "train")
    assert len(with_reference) == len(rows) - sum(e.task == "translate" for e in mono)
    for split in ("dev", "test", "test_unseen_voice"):
        assert all(e.english is not None for e in read_manifest(small, split, with_reference=False))


def test_the_espeak_preset_plans_the_corpus_of_issues_1_to_12():
    """The same utterance ids as the espeak-only `full` preset before corpus v2 (digest from that code)."""
    import hashlib

    utterances = plan(BuildConfig(languages=("de",), preset="espeak"))
    digest = hashlib.sha256("\n".join(u.id for u in utterances).encode()).hexdigest()
    assert (len(utterances), digest) == (
        15479,
        "e1d09170beb2dc493747d84beebcf22f207133dc5ffa39f630f44b00a562502f",
    )
    assert {u.family for u in utterances} == {"espeak"}


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
    from ctxprune.data import voices

    real_which = voices.shutil.which
    monkeypatch.setattr(
        voices.shutil, "which", lambda name: None if name == "espeak-ng" else real_which(name)
    )
    with pytest.raises(CtxpruneError, match="apt-get install espeak-ng"):
        build(tmp_path / "y", BuildConfig(preset="small"))
    monkeypatch.setattr(
        voices.shutil, "which", lambda name: None if name == "pico2wave" else real_which(name)
    )
    with pytest.raises(CtxpruneError, match="libttspico-utils.*`--preset espeak` still builds"):
        build(tmp_path / "z", BuildConfig(preset="small"))


def test_more_test_rows_extend_the_presets_and_change_no_other_split():
    """--test-rows / --unseen-rows: each split draws from its own stream, so the preset's rows are the
    first rows of the larger split (earlier results stay comparable) and train and dev are untouched."""

    def by_split(utterances):
        return {s: [u for u in utterances if u.split == s] for s in SPLITS}

    preset = by_split(plan(BuildConfig(languages=("it",), preset="small")))
    more = by_split(plan(BuildConfig(languages=("it",), preset="small", test_rows=9, unseen_rows=6)))
    assert (len(more["test"]), len(more["test_unseen_voice"])) == (9, 6)
    assert more["test"][:4] == preset["test"] and more["test_unseen_voice"][:3] == preset["test_unseen_voice"]
    assert more["train"] == preset["train"] and more["dev"] == preset["dev"]
    assert "test_rows" not in BuildConfig().to_json()  # a corpus built before the option keeps its config
    with pytest.raises(
        CtxpruneError, match="test split of it has only .* sentences; pass --test-rows .* or fewer"
    ):
        plan(BuildConfig(languages=("it",), preset="small", test_rows=10**6))
    proc = cli("data", "build", "--out", "/tmp/never", "--test-rows", "0")
    assert proc.returncode == 1 and "--test-rows must be at least 1" in proc.stderr
