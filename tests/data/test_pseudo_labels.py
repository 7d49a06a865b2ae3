"""Pseudo-labels: the dense teacher's greedy tokens, cached per teacher, resumed after an interruption."""

import json

import pytest

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import read_manifest
from ctxprune.data.pseudo_labels import (
    BASE_TEACHER,
    generate_pseudo_labels,
    labels_path,
    load_pseudo_labels,
    teacher_name,
)
from ctxprune.errors import CtxpruneError
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec, load_stack


@pytest.fixture(scope="module")
def tiny_stack(tiny_model_dir):
    return load_stack(StackSpec(model=str(tiny_model_dir)))


def test_labels_are_the_teachers_greedy_tokens_for_every_row(tiny_stack, tiny_corpus, tmp_path):
    import shutil

    corpus = tmp_path / "c"
    shutil.copytree(tiny_corpus, corpus, ignore=shutil.ignore_patterns("pseudo_labels"))
    record = generate_pseudo_labels(tiny_stack, corpus, "t", batch_size=3, max_new_tokens=5)
    rows = read_manifest(corpus, "train", with_reference=False)
    labels = load_pseudo_labels(corpus, "t")
    assert record["rows"] == len(rows) == len(labels)
    some = rows[:2]
    feats, frames = features_for([load_audio(corpus / e.audio) for e in some])
    direct = tiny_stack.run(
        feats,
        frames,
        [e.task for e in some],
        [e.language for e in some],
        options=DecodeOptions(max_new_tokens=5),
    )
    assert [labels[e.id] for e in some] == direct.tokens

    # interrupted: a torn last line and no completion record; the rerun decodes only what is missing
    path = labels_path(corpus, "t", "train")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:7])
    path.with_suffix(".done.json").unlink()
    with pytest.raises(CtxpruneError, match="ctxprune data pseudo-label"):
        load_pseudo_labels(corpus, "t")
    seen = []
    generate_pseudo_labels(
        tiny_stack, corpus, "t", batch_size=3, max_new_tokens=5, on_progress=lambda d, t: seen.append(d)
    )
    assert seen[0] == len(rows) - 3
    assert load_pseudo_labels(corpus, "t") == labels
    assert all(json.loads(line) for line in path.read_text().splitlines())

    # rows whose decode hit the cap (every row here, at 5 tokens) can be cut short; ended rows cannot
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    short = load_pseudo_labels(corpus, "t", unfinished_tokens=2)
    for row in rows:
        assert short[row["id"]] == (row["tokens"] if row["ended"] else row["tokens"][:2])
    assert any(not row["ended"] and len(row["tokens"]) > 2 for row in rows)


def test_teachers_are_named_by_their_weights(tiny_model_dir):
    assert teacher_name() == BASE_TEACHER
    assert teacher_name(str(tiny_model_dir)).startswith("model-")
    assert teacher_name(str(tiny_model_dir)) != BASE_TEACHER
