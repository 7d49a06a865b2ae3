"""eval/quality.py: which rows are evaluated, how they are batched, and what `evaluate` reports per
(task, language), on the tiny random Whisper and the tiny German corpus."""

from collections import Counter
from dataclasses import replace

import pytest

from ctxprune.data.manifest import Example, read_manifest
from ctxprune.errors import CtxpruneError
from ctxprune.eval.metrics import bleu_from_stats
from ctxprune.eval.quality import evaluate, group_batches, limit_per_group, only_groups, rows_digest
from ctxprune.gating.policy import RandomMasks
from ctxprune.gating.random_gates import RandomGates
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec, load_stack


def example(task: str, language: str, i: int) -> Example:
    return Example(f"{task}-{language}-{i}", f"{i}.flac", 1.0, language, task, "t", "e", "m1", i)


ROWS = [
    example("transcribe", "de", 0),
    example("translate", "fr", 0),
    example("transcribe", "de", 1),
    example("transcribe", "de", 2),
    example("translate", "fr", 1),
    example("transcribe", "en", 0),
]


def test_limit_per_group_keeps_the_first_rows_of_each_group_in_manifest_order():
    assert [e.id for e in limit_per_group(ROWS, 1)] == [
        "transcribe-de-0",
        "translate-fr-0",
        "transcribe-en-0",
    ]
    assert [e.id for e in limit_per_group(ROWS, 2)] == [e.id for e in ROWS if e.id != "transcribe-de-2"]
    assert limit_per_group(ROWS, None) == ROWS
    assert limit_per_group(ROWS, 0) == []


def test_only_groups_keeps_the_named_groups_in_manifest_order_and_refuses_a_group_with_no_rows():
    assert [e.id for e in only_groups(ROWS, ["transcribe/de"])] == [
        "transcribe-de-0",
        "transcribe-de-1",
        "transcribe-de-2",
    ]
    assert [e.id for e in only_groups(ROWS, ["transcribe/en", "translate/fr"])] == [
        "translate-fr-0",
        "translate-fr-1",
        "transcribe-en-0",
    ]
    assert only_groups(ROWS, None) == ROWS
    with pytest.raises(CtxpruneError, match="no rows for group transcribe/fr; the split has transcribe/de"):
        only_groups(ROWS, ["transcribe/fr"])


def test_group_batches_hold_one_task_and_language_each():
    batches = group_batches(ROWS, 2)
    assert [[e.id for e in b] for b in batches] == [
        ["transcribe-de-0", "transcribe-de-1"],
        ["transcribe-de-2"],
        ["transcribe-en-0"],
        ["translate-fr-0", "translate-fr-1"],
    ]
    for batch in group_batches(ROWS, 16):
        assert len({(e.task, e.language) for e in batch}) == 1
    assert sorted(e.id for b in group_batches(ROWS, 3) for e in b) == sorted(e.id for e in ROWS)


@pytest.fixture(scope="module")
def tiny_stack(tiny_model_dir):
    return load_stack(StackSpec(str(tiny_model_dir)))


@pytest.fixture(scope="module")
def rows(tiny_corpus):
    return limit_per_group(read_manifest(tiny_corpus, "test"), 2)


def test_evaluate_scores_each_group_and_counts_what_ran(tiny_stack, tiny_corpus, rows):
    random = RandomMasks(RandomGates(tiny_stack.space, 0.5, "dec.", seed=0))  # some decoder branches skipped
    pipeline = tiny_stack.with_policy(random).pipeline
    progress = []
    out = evaluate(
        pipeline,
        tiny_stack.loaded.tokenizer,
        tiny_corpus,
        rows,
        batch_size=4,
        on_progress=progress.append,
        options=DecodeOptions(max_new_tokens=3, count_flops=True),
    )
    counts = Counter(f"{e.task}/{e.language}" for e in rows)
    assert set(out) == {"transcribe/de", "translate/de"} == set(counts)
    assert sum(progress) == len(rows)
    for key, group in out.items():
        assert group["n"] == counts[key]
        if key.startswith("transcribe/"):
            assert {"wer", "cer"} <= set(group) and "bleu" not in group
        else:
            assert {"bleu", "chrf", "bleu_signature"} <= set(group) and "wer" not in group
        keep = group["keep_rate"]
        assert list(keep) == list(pipeline.space.names)
        assert all(0.0 <= v <= 1.0 for v in keep.values())
        assert all(v == 1.0 for name, v in keep.items() if name.startswith("enc."))
        assert any(v < 1.0 for name, v in keep.items() if name.startswith("dec."))
        # by count every gate weighs the same: the skipped share is one minus the mean keep rate
        assert group["sparsity_count"] == pytest.approx(1 - sum(keep.values()) / len(keep))
        assert 0.0 < group["sparsity_flops"] < 1.0
        assert group["gflops_encoder"] > 0 and group["gflops_decoder"] > 0
        # each row's statistics, in manifest order, sum to the group's corpus score
        task, language = key.split("/")
        assert group["rows_digest"] == rows_digest(
            [e.id for e in rows if (e.task, e.language) == (task, language)]
        )
        stats = group["row_stats"]
        assert all(len(v) == group["n"] for v in stats.values())
        if task == "transcribe":
            assert sum(stats["errors"]) / sum(stats["words"]) == pytest.approx(group["wer"])
        else:
            assert bleu_from_stats({k: sum(v) for k, v in stats.items()}) == pytest.approx(group["bleu"])
    # the tiny random model never says end-of-text within 3 tokens: every row hits the cap
    assert {group["capped"] for group in out.values()} == {1.0}


def test_evaluate_with_the_loop_guard_reports_looped_and_fallback_shares(
    tiny_stack, tiny_corpus, rows, pruned_rows_loop
):
    """Every pruned row is made to loop (the tiny model does not): each is decoded again by the dense
    model, whose answers do not loop, and the decoder's GFLOPs count both decodings."""
    pipeline = tiny_stack.with_policy(RandomMasks(RandomGates(tiny_stack.space, 0.5, "dec.", 0))).pipeline
    options = DecodeOptions(max_new_tokens=3, count_flops=True, loop_guard=True)
    args = (pipeline, tiny_stack.loaded.tokenizer, tiny_corpus, rows)
    guarded, plain = (
        evaluate(*args, options=options),
        evaluate(*args, options=replace(options, loop_guard=False)),
    )
    for key, group in guarded.items():
        assert group["fallback"] == 1.0 and group["looped"] == 0.0
        assert group["gflops_decoder"] > plain[key]["gflops_decoder"]
        assert group["gflops_encoder"] == plain[key]["gflops_encoder"]  # the encoder ran dense: reused
        assert "fallback" not in plain[key] and "looped" not in plain[key]


def test_evaluate_without_counting_flops_reports_no_gflops(tiny_stack, tiny_corpus, rows):
    options = DecodeOptions(max_new_tokens=2)
    out = evaluate(tiny_stack.pipeline, tiny_stack.loaded.tokenizer, tiny_corpus, rows[:2], options=options)
    for group in out.values():
        assert "gflops_encoder" not in group and "gflops_decoder" not in group
        assert group["sparsity_count"] == 0.0 and set(group["keep_rate"].values()) == {1.0}
