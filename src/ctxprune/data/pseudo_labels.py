"""The dense teacher's own greedy outputs (pseudo-labels) for every row of a split, decoded once and cached
with the corpus, so that distillation reads tokens instead of decoding at every step.

Layout: `CORPUS/pseudo_labels/<teacher>/<split>.jsonl` (one row per utterance: id, tokens, whether the
decode ended on end-of-text) and `<split>.done.json` once every row is there. The teacher is `base` or
another model's or adapter's sha256 prefix (`teacher_name`), so labels of one model are never read for
another. Rows are appended and flushed batch by batch: an interrupted run resumes after the last
complete line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ctxprune import assets
from ctxprune.data.dataset import SpeechDataset
from ctxprune.data.features import features_for
from ctxprune.errors import CtxpruneError
from ctxprune.paths import write_json_atomic
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import Stack, adapter_sha256, check_adapter

BASE_TEACHER = "base"


def teacher_name(model: str | None = None, adapter: str | Path | None = None) -> str:
    """`base` (the prepared Whisper base) or `model-<sha>` for another model, plus `+adapter-<sha>` for
    an adapter merged into it: by the sha256 of the weights, so that labels never cross models."""
    name = BASE_TEACHER
    if model is not None:
        weights = assets.resolve(model) / "model.safetensors"
        name = f"model-{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"
    if adapter is not None:
        name += f"+adapter-{adapter_sha256(check_adapter(adapter))[:12]}"
    return name


def labels_path(corpus: Path, teacher: str, split: str) -> Path:
    return Path(corpus) / "pseudo_labels" / teacher / f"{split}.jsonl"


def _done_path(corpus: Path, teacher: str, split: str) -> Path:
    return labels_path(corpus, teacher, split).with_suffix(".done.json")


def _complete_rows(path: Path) -> dict[str, dict]:
    """The rows written so far; a torn last line (an interrupted write) is dropped from the file."""
    if not path.exists():
        return {}
    rows, good = {}, 0
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            rows[row["id"]] = row
            good += len(line)
    with open(path, "r+b") as f:
        f.truncate(good)
    return rows


def load_pseudo_labels(
    corpus: Path, teacher: str, split: str = "train", unfinished_tokens: int | None = None
) -> dict[str, list[int]]:
    """Token ids by utterance id; refuses labels that are missing or unfinished. With
    `unfinished_tokens`, a row whose decode hit the length cap instead of ending (a loop, as a rule)
    keeps only its first that many tokens."""
    path = labels_path(corpus, teacher, split)
    if not _done_path(corpus, teacher, split).exists():
        raise CtxpruneError(
            f"no finished pseudo-labels of teacher {teacher!r} for {corpus}/{split}; run "
            f"`ctxprune data pseudo-label {corpus}`"
            + ("" if teacher == BASE_TEACHER else " with the run's --model and --adapter")
            + " first"
        )
    rows = _complete_rows(path).items()
    if unfinished_tokens is None:
        return {i: row["tokens"] for i, row in rows}
    return {i: row["tokens"] if row["ended"] else row["tokens"][:unfinished_tokens] for i, row in rows}


@torch.inference_mode()
def generate_pseudo_labels(
    stack: Stack,
    corpus: Path,
    teacher: str,
    split: str = "train",
    batch_size: int = 64,
    max_new_tokens: int = 128,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
) -> dict:
    """Decode every row of `split` (with or without a reference) greedily with the dense `stack`, in
    batches of similar duration; resume where an earlier run stopped. Returns the summary record."""
    corpus = Path(corpus)
    dataset = SpeechDataset(corpus, split, with_reference=False)
    examples = dataset.examples
    path = labels_path(corpus, teacher, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _complete_rows(path)
    todo = sorted((i for i, e in enumerate(examples) if e.id not in done), key=lambda i: examples[i].duration)
    options = DecodeOptions(max_new_tokens=max_new_tokens)
    n_mels = stack.gated.config.num_mel_bins
    device, dtype = stack.gated.device, next(stack.gated.model.parameters()).dtype
    if on_progress:
        on_progress(len(done), len(examples))
    # audio is read by worker processes while the GPU decodes; the log-mel is computed on the device
    batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=list, num_workers=workers)
    labelled = len(done)
    with open(path, "a") as out:
        for batch in loader:
            rows = [e for e, _ in batch]
            feats, frames = features_for([audio for _, audio in batch], n_mels, device)
            result = stack.run(
                feats.to(dtype), frames, [e.task for e in rows], [e.language for e in rows],
                options=options,
            )  # fmt: skip
            for e, tokens in zip(rows, result.tokens, strict=True):
                ended = len(tokens) < max_new_tokens
                out.write(json.dumps({"id": e.id, "tokens": tokens, "ended": ended}) + "\n")
            out.flush()
            labelled += len(rows)
            if on_progress:
                on_progress(labelled, len(examples))
    rows = _complete_rows(path)
    record = {
        "teacher": teacher,
        "split": split,
        "rows": len(rows),
        "ended_on_eot": sum(r["ended"] for r in rows.values()),
        "mean_tokens": round(sum(len(r["tokens"]) for r in rows.values()) / max(1, len(rows)), 2),
        "max_new_tokens": max_new_tokens,
        "device": str(device),
    }
    write_json_atomic(_done_path(corpus, teacher, split), record)
    return record
