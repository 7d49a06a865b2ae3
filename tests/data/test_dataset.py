import pytest
import torch

from ctxprune.data.corpus import BuildConfig, build
from ctxprune.data.dataset import Collate, DurationBucketSampler, SpeechDataset
from ctxprune.data.manifest import read_manifest


def test_bucket_sampler_covers_everything_once_and_groups_similar_durations():
    durations = [float(d) for d in torch.randperm(500, generator=torch.Generator().manual_seed(0)).tolist()]
    sampler = DurationBucketSampler(durations, batch_size=8, seed=3, window=10)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    spread = sum(max(durations[i] for i in b) - min(durations[i] for i in b) for b in batches) / len(batches)
    assert spread < 60  # random batches of 8 from 0..499 would spread ~390
    assert batches == list(DurationBucketSampler(durations, 8, seed=3, window=10))
    sampler.set_epoch(1)
    assert list(sampler) != batches


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    build(out, BuildConfig(languages=("de",), preset="small", seed=5), workers=2)
    return out


def test_dataset_and_collate_make_whisper_batches(corpus, real_whisper):
    ds = SpeechDataset(corpus, "train")
    every_row = read_manifest(corpus, "train", with_reference=False)  # monolingual translations: no target
    assert len(every_row) == 24 and len(ds) == sum(e.has_reference for e in every_row) < 24
    assert {e.task for e in ds.examples} == {"transcribe", "translate"} and all(e.target for e in ds.examples)
    collate = Collate(tokenizer=real_whisper.tokenizer, tokens=real_whisper.tokens)
    batch = collate([ds[i] for i in range(4)])
    assert batch["features"].shape == (4, 80, 3000)
    assert all(0 < f <= 3000 for f in batch["frames"].tolist())
    ids, labels = batch["decoder_input_ids"], batch["labels"]
    assert ids.shape == labels.shape
    for row, ex in enumerate(batch["examples"]):
        assert ids[row, :4].tolist() == real_whisper.tokens.prompt("de", ex.task)
        target = labels[row][labels[row] != -100].tolist()
        assert target[-1] == real_whisper.tokens.eot
        assert real_whisper.tokenizer.decode(target[:-1]).strip() == ex.target
        # teacher forcing: the label at position t is the input at t + 1
        n = len(target)
        assert ids[row, 4 : 4 + n - 1].tolist() == target[:-1]


def test_task_filter(corpus):
    only = SpeechDataset(corpus, "test", tasks=("translate",))
    assert only.examples and all(e.task == "translate" and e.target == e.english for e in only.examples)
