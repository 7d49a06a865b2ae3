"""Small synthetic eval and bench result files whose verdicts are known in advance, for the report's tests."""

import json
from pathlib import Path

LAT = "ctx-lat-0.5"
GATES = [f"enc.{i}.{m}" for i in range(2) for m in ("attn", "ffn")] + [
    f"dec.{i}.{m}" for i in range(2) for m in ("self_attn", "cross_attn", "ffn")
]


def group(quality: dict, gflops_decoder: float, keep: float, where: str = "decoder") -> dict:
    return {
        **quality,
        "n": 10,
        "gflops_encoder": 40.0 * (keep if where == "both" else 1.0),
        "gflops_decoder": gflops_decoder,
        "achieved_sparsity": 1 - keep,
        "sparsity_flops": 1 - keep,
        "sparsity_count": 1 - keep,
        "keep_rate": {g: (keep if g.startswith("dec") else 1.0) for g in GATES},
    }


def model(
    name,
    kind,
    wer,
    bleu,
    target=None,
    seed=None,
    where="decoder",
    by="flops",
    variant=None,
    skipped=None,
    predictor=None,
) -> dict:
    """`wer` and `bleu` are per language: {"de": ..., "fr": ...}; `target` is also the skipped share
    unless `skipped` says otherwise."""
    keep = 1.0 if target is None else 1 - (target if skipped is None else skipped)
    groups = {
        f"transcribe/{k}": group({"wer": v, "cer": v / 2}, 4 * keep, keep, where) for k, v in wer.items()
    }
    groups |= {
        f"translate/{k}": group({"bleu": v, "chrf": 2 * v}, 4 * keep, keep, where) for k, v in bleu.items()
    }
    return {
        "name": name,
        "kind": kind,
        "where": None if kind == "dense" else where,
        "sparsity_by": None if kind == "dense" else by,
        "target_sparsity": target,
        "seed": seed,
        "variant": variant,
        **({"predictor": predictor} if predictor else {}),
        "groups": groups,
    }


def eval_file(path: Path, split: str, models: list[dict]) -> Path:
    meta = {
        "data": "/corpus",
        "device": "cpu",
        "torch": "2.13.0",
        "normalizer": "whisper",
        "bleu_signature": "x",
    }
    path.write_text(json.dumps({"kind": "eval", "split": split, **meta, "models": models}))
    return path


def bench_row(name: str, ms: float) -> dict:
    return {"name": name, "batch": 1, "median_ms": ms, "p25_ms": ms - 2, "p75_ms": ms + 3, "min_ms": ms - 4,
            "max_ms": ms + 5, "repeats": 5, "tokens": 30, "tokens_per_s": 30_000 / ms,
            "reduction_vs_dense": 1 - ms / 100}  # fmt: skip


def runtimes_file(tmp_path: Path, set_name: str, digest: str | None) -> Path:
    """A bench/runtimes.py file that timed dense at 7.2 ms and `set_name` at 5.0 (30.6% faster), with the
    set's predictor digest where `digest` is given (files before the eighteenth step have none)."""
    timing = {"p25_ms": 0, "p75_ms": 0, "repeats": 5, "tokens": 90}
    results = {
        "ours-dense-graphs": {**timing, "median_ms": 7.2},
        f"ours-{set_name}": {**timing, "median_ms": 5.0},
    }
    record = {"kind": "bench-runtimes", "device": "H100", "natural_batch1": {"results": results}}
    if digest is not None:
        record["gate_set_predictors"] = {set_name: digest}
    path = tmp_path / f"{set_name}-{digest}.json"
    path.write_text(json.dumps(record))
    return path
