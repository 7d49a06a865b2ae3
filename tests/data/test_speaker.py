import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxprune.data import speaker
from ctxprune.data.audio import load_audio
from ctxprune.data.dataset import SpeechDataset
from ctxprune.data.manifest import audio_files, read_manifest
from ctxprune.data.speaker import SPEAKER, SPEAKER_DIM, SpeakerVectors, embed, embed_corpus, embedder
from ctxprune.errors import CtxpruneError


def test_vectors_are_unit_length_and_tell_the_corpus_voices_apart(tiny_corpus):
    """The real embedder: rows of one voice lie closer together than rows of different voices."""
    rows = read_manifest(tiny_corpus, "train", with_reference=False)
    by_voice: dict[str, list] = {}
    for r in rows:
        by_voice.setdefault(r.voice, []).append(r)
    voices = {v: rs[:3] for v, rs in by_voice.items() if len(rs) >= 2}
    assert len(voices) >= 3
    vectors = {v: embedder()([load_audio(tiny_corpus / r.audio) for r in rs]) for v, rs in voices.items()}
    for v in vectors.values():
        assert v.shape[1] == SPEAKER_DIM
        torch.testing.assert_close(v.norm(dim=1), torch.ones(len(v)), atol=1e-4, rtol=0)
    for v, own in vectors.items():
        same = np.mean([float(a @ b) for a, b in itertools.combinations(own, 2)])
        other = np.mean([float((own @ w.T).mean()) for u, w in vectors.items() if u != v])
        assert same > other + 0.1, (v, same, other)


def test_the_cache_resumes_and_equals_embedding_on_the_fly(tiny_corpus, monkeypatch):
    monkeypatch.setattr(speaker, "SHARD_FILES", 2)
    total = embed_corpus(tiny_corpus, "dev", workers=2)
    shards = sorted((tiny_corpus / "context_vectors" / SPEAKER / "dev").glob("*.safetensors"))
    assert len(shards) == -(-total // 2) >= 2
    kept = shards[0].stat().st_mtime_ns
    shards[-1].unlink()  # as if interrupted before the last shard
    progress = []
    assert embed_corpus(tiny_corpus, "dev", on_progress=lambda d, t: progress.append(d)) == total
    assert progress[0] == 2 * (len(shards) - 1)  # the shards on disk count as done
    assert shards[0].stat().st_mtime_ns == kept and shards[-1].exists()

    rows = read_manifest(tiny_corpus, "dev", with_reference=False)
    assert total == len({r.audio for r in rows}) < len(rows)  # one vector per audio file, rows share them
    rows = rows[:5]
    cached = SpeakerVectors(tiny_corpus, "dev")([r.id for r in rows])
    chunks = [load_audio(tiny_corpus / r.audio) for r in rows]
    torch.testing.assert_close(cached, embedder()(chunks))
    torch.testing.assert_close(cached, embed(chunks, workers=2))  # what evaluation computes, in a pool
    with pytest.raises(CtxpruneError, match="no speaker vector for nope"):
        SpeakerVectors(tiny_corpus, "dev")(["nope"])


def test_every_nth_file_is_the_subset_that_training_on_every_nth_file_reads(tiny_corpus, tmp_path):
    """`speaker-embed --every 3` and `train_every_audio=3` pick the same files, and a row outside
    them is refused with the setting that fits the cache."""
    tiny_corpus = Path(
        shutil.copytree(tiny_corpus, tmp_path / "corpus", ignore=shutil.ignore_patterns("context_*"))
    )
    rows = read_manifest(tiny_corpus, "dev", with_reference=False)
    every = audio_files(rows, 3)
    assert embed_corpus(tiny_corpus, "dev", every=3) == len(every) == -(-len(audio_files(rows)) // 3)
    assert all(
        p.name.startswith("every3-") for p in (tiny_corpus / "context_vectors" / SPEAKER / "dev").iterdir()
    )
    subset = SpeechDataset(tiny_corpus, "dev", with_reference=False, every_audio=3)
    assert {e.audio for e in subset.examples} == set(every)
    assert len(SpeakerVectors(tiny_corpus, "dev")([e.id for e in subset.examples])) == len(subset)
    outside = next(r for r in rows if r.audio not in set(every))
    with pytest.raises(CtxpruneError, match="train_every_audio=3"):
        SpeakerVectors(tiny_corpus, "dev")([outside.id])
    with pytest.raises(CtxpruneError, match="every must be at least 1"):
        audio_files(rows, 0)


def test_a_split_without_vectors_says_which_command_makes_them(tmp_path):
    with pytest.raises(CtxpruneError, match="ctxprune data speaker-embed"):
        SpeakerVectors(tmp_path, "train")


def test_a_whole_split_beside_a_subset_gives_every_row_its_own_vector(tiny_corpus, tmp_path, monkeypatch):
    """A subset's shards after the whole split's repeat files; each row still reads its own file's vector
    (the reader indexed by distinct files before, which put later shards' files on the wrong rows)."""
    monkeypatch.setattr(speaker, "SHARD_FILES", 1)
    corpus = Path(
        shutil.copytree(tiny_corpus, tmp_path / "corpus", ignore=shutil.ignore_patterns("context_*"))
    )
    embed_corpus(corpus, "dev", every=1, workers=2)
    whole = SpeakerVectors(corpus, "dev")
    rows = read_manifest(corpus, "dev", with_reference=False)
    before = whole([r.id for r in rows])
    assert embed_corpus(corpus, "dev", every=2, workers=2) >= 2  # two subset shards at least
    mixed = SpeakerVectors(corpus, "dev")
    assert len(mixed.vectors) > len(whole.vectors)
    torch.testing.assert_close(mixed([r.id for r in rows]), before)


def test_a_cache_of_another_shard_size_is_refused_on_resume(tiny_corpus, tmp_path, monkeypatch):
    corpus = Path(
        shutil.copytree(tiny_corpus, tmp_path / "corpus", ignore=shutil.ignore_patterns("context_*"))
    )
    monkeypatch.setattr(speaker, "SHARD_FILES", 1)
    assert embed_corpus(corpus, "dev") >= 3
    monkeypatch.setattr(speaker, "SHARD_FILES", 2)
    with pytest.raises(CtxpruneError, match="another shard size or manifest; delete"):
        embed_corpus(corpus, "dev")
