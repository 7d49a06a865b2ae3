import itertools

import numpy as np
import pytest
import torch

from ctxprune.data import speaker
from ctxprune.data.audio import load_audio
from ctxprune.data.manifest import read_manifest
from ctxprune.data.speaker import SPEAKER, SPEAKER_DIM, SpeakerVectors, embed_corpus, embedder
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
    fresh = embedder()([load_audio(tiny_corpus / r.audio) for r in rows])
    torch.testing.assert_close(cached, fresh)
    with pytest.raises(CtxpruneError, match="no speaker vector for nope"):
        SpeakerVectors(tiny_corpus, "dev")(["nope"])


def test_a_split_without_vectors_says_which_command_makes_them(tmp_path):
    with pytest.raises(CtxpruneError, match="ctxprune data speaker-embed"):
        SpeakerVectors(tmp_path, "train")
