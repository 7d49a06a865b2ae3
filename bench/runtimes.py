"""Bench (issue 7): HF `generate` against our runtime (eager, and with CUDA graphs), dense and pruned by
the shipped decoder gate sets, at batch 1 and at batch 16 with mixed contexts; the ideal reduction of
each gate set from measured module times; beam search agreement with HF.

Phases, each with its variants interleaved in a rotating order after warm-up rounds:
1. natural, batch 1: greedy to end-of-text (at most --max-new-tokens) over --rows test rows (every task
   and language in turn), one row at a time. Time per utterance (features on the device to tokens),
   tokens/s, and whether each runtime's tokens equal HF's (dense) and the eager path's (graphs). On CUDA
   each gate set also runs as `+late-start`: decoding waits for the mask (`runtime.early_start`); how
   the early starts' guesses went is recorded.
2. fixed, batch 1: every variant decodes exactly --fixed-tokens tokens (end-of-text suppressed until then,
   as HF's min_new_tokens), so that all do the same work but the skipped modules. The ideal reduction of
   a gate set is the summed time of the modules it skips (profiled on the dense eager run: kernel time on
   CUDA, share of the time on the CPU), weighted by the share of rows that skip each.
3. fixed, batch --batch with mixed contexts: one batch of rows from every task and language; throughput
   gain against dense, grouped graphs and the eager row-gather path, and the ideal gain.
4. beam: beam 5 on --beam-rows rows, ours against HF generate(num_beams=5): identical rows.

Usage: python bench/runtimes.py CORPUS [--device cuda] [--dtype fp16] [--rows 9] [--batch 16]
         [--fixed-tokens 32] [--repeats 10] [--warmup 2] [--beam-rows 9] [--threads N]
         [--loop-guard] [--out results/runtimes_gpu.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch
import transformers

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import read_manifest
from ctxprune.eval.latency import interleaved, mixed_rows
from ctxprune.eval.module_times import branch_times
from ctxprune.eval.suite import device_name
from ctxprune.paths import ARTIFACTS, predictor_digest, write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import Stack, StackSpec, load_stack

GATE_SETS = sorted(p.name for p in (ARTIFACTS / "gates").iterdir() if p.name.startswith("decoder-"))
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "p25_ms": q[0], "p75_ms": q[2], "repeats": len(times)}


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = args.device
        self.cuda = args.device.startswith("cuda")
        dtype = DTYPES[args.dtype]
        names = ["dense", *args.gate_sets]
        spec = StackSpec(device=args.device, dtype=dtype)  # the shipped sets prune Whisper base
        self.stacks: dict[str, Stack] = {
            n: load_stack(spec.with_gates(None if n == "dense" else ARTIFACTS / "gates" / n)) for n in names
        }
        self.hf = self.stacks["dense"].loaded.model  # the same merged weights, through upstream `generate`
        test = read_manifest(args.corpus, "test")
        self.rows1 = [self._inputs([e]) for e in mixed_rows(test, args.rows)]
        self.batch = self._inputs(mixed_rows(test, args.batch))

    def _inputs(self, rows):
        feats, frames = features_for([load_audio(self.args.corpus / e.audio) for e in rows])
        dtype = DTYPES[self.args.dtype]
        return feats.to(self.device, dtype), frames, [e.task for e in rows], [e.language for e in rows]

    def ours(
        self,
        name: str,
        inputs,
        graphs: bool,
        fixed: int | None = None,
        beams: int = 1,
        guard: bool = False,
        early_start: bool = True,
    ):
        """A call that decodes `inputs` (a list of batches) with stack `name`; returns its results.
        With `guard`, the loop guard runs (and a gated row that loops is decoded again dense); without
        `early_start`, decoding waits for the mask (`runtime.early_start`)."""
        stack = self.stacks[name]
        n = fixed or self.args.max_new_tokens
        path = "graphs" if graphs else "gather"
        options = DecodeOptions(
            beams=beams, max_new_tokens=n, min_new_tokens=fixed or 0, path=path, loop_guard=guard
        )

        def call():
            stack.pipeline.early_start = early_start
            try:
                return [stack.run(f, fr, t, lang, options=options) for f, fr, t, lang in inputs]
            finally:
                stack.pipeline.early_start = True

        return call

    def hf_call(self, inputs, beams: int = 1, fixed: int | None = None):
        """HF `generate` over `inputs`; a batch is split by task (HF takes one task per call, and a
        language per row)."""
        tokens = self.stacks["dense"].loaded.tokens
        lengths = {"max_new_tokens": fixed or self.args.max_new_tokens, "min_new_tokens": fixed or 0}

        def call():
            out = []
            for feats, _, tasks, langs in inputs:
                rows: list[list[int]] = [[] for _ in tasks]
                for task in sorted(set(tasks)):
                    index = [i for i, t in enumerate(tasks) if t == task]
                    with torch.inference_mode():
                        ids = self.hf.generate(
                            feats[index],
                            language=[langs[i] for i in index],
                            task=task,
                            do_sample=False,
                            num_beams=beams,
                            **lengths,
                        ).tolist()
                    for i, row in zip(index, ids, strict=True):
                        rows[i] = tokens.until_end(row)
                out.append(rows)
            return out

        return call

    def timed(self, variants, bar, label, per: int):
        """Run interleaved; per-variant summary with times divided by `per` (rows per call at batch 1)."""
        task = bar.add_task(label, total=(self.args.warmup + self.args.repeats) * len(variants))
        times, outputs = interleaved(
            variants, self.args.repeats, self.args.warmup, self.device, lambda: bar.advance(task)
        )
        return {n: _summary([t / per for t in ts]) for n, ts in times.items()}, outputs


def _tokens(outputs) -> list[list[int]]:
    """Token rows from a list of results (ours) or a list of token-row lists (HF)."""
    return [row for o in outputs for row in (o.tokens if hasattr(o, "tokens") else o)]


def _skip_share(results, names: list[str]) -> dict[str, float]:
    masks = torch.cat([r.mask for r in results]).float()
    return {n: float(1 - masks[:, j].mean()) for j, n in enumerate(names) if masks[:, j].mean() < 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--rows", type=int, default=9)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--fixed-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--beam-rows", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gate-sets", nargs="*", default=GATE_SETS)
    ap.add_argument(
        "--loop-guard", action="store_true", help="natural batch 1 also with the loop guard (variants +guard)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or Path(f"results/runtimes_{'gpu' if args.device.startswith('cuda') else 'cpu'}.json")
    b = Bench(args)
    cuda, sets = b.cuda, args.gate_sets
    record: dict = {
        "kind": "bench-runtimes",
        "device": device_name(args.device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("corpus", "out")},
        # which set each name was when timed: a shipped set may be replaced under its name
        "gate_set_predictors": {s: predictor_digest(ARTIFACTS / "gates" / s) for s in sets},
    }
    names = list(b.stacks[sets[0] if sets else "dense"].space.names)
    with progress_bar() as bar:
        # 1. natural length, batch 1
        rows = len(b.rows1)
        variants = {"hf-generate": b.hf_call(b.rows1), "ours-dense-eager": b.ours("dense", b.rows1, False)}
        if cuda:
            variants["ours-dense-graphs"] = b.ours("dense", b.rows1, True)
        variants |= {f"ours-{s}": b.ours(s, b.rows1, cuda) for s in sets}
        if cuda:  # the same, decoding only once the mask is read
            variants |= {f"ours-{s}+late-start": b.ours(s, b.rows1, cuda, early_start=False) for s in sets}
        for s in sets:
            b.stacks[s].pipeline.guesses.outcomes.clear()
        if args.loop_guard:
            variants[f"ours-dense{'-graphs' if cuda else '-eager'}+guard"] = b.ours(
                "dense", b.rows1, cuda, guard=True
            )
            variants |= {f"ours-{s}+guard": b.ours(s, b.rows1, cuda, guard=True) for s in sets}
        summary, outputs = b.timed(variants, bar, "natural b1", per=rows)
        hf_tps = None
        for name, s in summary.items():
            s["tokens"] = sum(map(len, _tokens(outputs[name])))
            s["tokens_per_s"] = s["tokens"] / (s["median_ms"] * rows / 1000)
            hf_tps = hf_tps or s["tokens_per_s"]
            s["tokens_per_s_vs_hf"] = s["tokens_per_s"] / hf_tps
        hf_rows = _tokens(outputs["hf-generate"])
        eager_rows = _tokens(outputs["ours-dense-eager"])
        checks = {"hf_equals_ours_dense_eager": sum(a == c for a, c in zip(hf_rows, eager_rows, strict=True))}
        if cuda:
            graph_rows = _tokens(outputs["ours-dense-graphs"])
            checks["hf_equals_ours_dense_graphs"] = sum(
                a == c for a, c in zip(hf_rows, graph_rows, strict=True)
            )
            for s in sets:  # untimed: each gate set's graphs against its own eager path
                eager = _tokens(b.ours(s, b.rows1, False)())
                same = sum(a == c for a, c in zip(eager, _tokens(outputs[f"ours-{s}"]), strict=True))
                checks[f"{s}_graphs_equal_eager"] = same
                late = _tokens(outputs[f"ours-{s}+late-start"])
                checks[f"{s}_early_start_equals_late"] = sum(
                    a == c for a, c in zip(late, _tokens(outputs[f"ours-{s}"]), strict=True)
                )
        # how the early starts' guesses went over this section (timed rounds, warm-up and the checks)
        early = {s: dict(b.stacks[s].pipeline.guesses.outcomes) for s in sets}
        record["natural_batch1"] = {"rows": rows, "checks": checks, "results": summary, "early_starts": early}

        # 2. fixed length, batch 1, against the ideal
        fixed = args.fixed_tokens
        variants = {
            "hf-generate": b.hf_call(b.rows1, fixed=fixed),
            "ours-dense": b.ours("dense", b.rows1, cuda, fixed),
        }
        variants |= {f"ours-{s}": b.ours(s, b.rows1, cuda, fixed) for s in sets}
        summary, outputs = b.timed(variants, bar, "fixed b1", per=rows)
        dense_gw = b.stacks["dense"].gated
        times = branch_times(dense_gw, b.ours("dense", b.rows1, False, fixed))
        dense_ms = summary["ours-dense"]["median_ms"]
        for r in summary.values():
            r["reduction"] = 1 - r["median_ms"] / dense_ms
        for s in sets:
            saving = times.saving_ms(_skip_share(outputs[f"ours-{s}"], names), dense_ms * rows) / rows
            r = summary[f"ours-{s}"]
            r["ideal_reduction"] = saving / dense_ms
            r["share_of_ideal"] = r["reduction"] / r["ideal_reduction"] if saving > 0 else None
        record["fixed_batch1"] = {
            "rows": rows,
            "tokens": fixed,
            "branch_ms_per_utterance": {k: v / rows for k, v in times.ms.items()},
            "profiled_wall_ms": times.profiled_wall_ms / rows,
            "results": summary,
        }

        # 3. fixed length, one mixed batch
        batch = [b.batch]
        variants = {
            "hf-generate": b.hf_call(batch, fixed=fixed),
            "ours-dense": b.ours("dense", batch, cuda, fixed),
        }
        if cuda:
            variants["ours-dense-eager"] = b.ours("dense", batch, False, fixed)
        for s in sets:
            variants[f"ours-{s}"] = b.ours(s, batch, cuda, fixed)
            if cuda:
                variants[f"ours-{s}-gather"] = b.ours(s, batch, False, fixed)
        summary, outputs = b.timed(variants, bar, f"fixed b{args.batch}", per=1)
        times = branch_times(dense_gw, b.ours("dense", batch, False, fixed))
        dense_ms = summary["ours-dense"]["median_ms"]
        for name, r in summary.items():
            r["throughput_gain"] = dense_ms / r["median_ms"] - 1
            gate_set = name.removeprefix("ours-").removesuffix("-gather")
            if gate_set in sets:
                saving = times.saving_ms(_skip_share(outputs[name], names), dense_ms)
                r["ideal_gain"] = dense_ms / (dense_ms - saving) - 1
                r["share_of_ideal"] = r["throughput_gain"] / r["ideal_gain"] if saving > 0 else None
                r["signatures"] = len({tuple(m) for m in outputs[name][0].mask.tolist()})
        record["fixed_batch"] = {
            "rows": args.batch,
            "contexts": len({(t, lang) for t, lang in zip(b.batch[2], b.batch[3], strict=True)}),
            "tokens": fixed,
            "branch_ms": times.ms,
            "results": summary,
        }

        # 4. beam search agreement with HF
        if args.beam_rows:
            beam_inputs = b.rows1[: args.beam_rows]
            ours = _tokens(b.ours("dense", beam_inputs, cuda, beams=5)())
            ours_eager = _tokens(b.ours("dense", beam_inputs, False, beams=5)())
            hf = _tokens(b.hf_call(beam_inputs, beams=5)())
            record["beam5"] = {
                "rows": len(beam_inputs),
                "ours_equals_hf": sum(a == c for a, c in zip(ours, hf, strict=True)),
                "ours_eager_equals_hf": sum(a == c for a, c in zip(ours_eager, hf, strict=True)),
                "beam_differs_from_greedy": sum(
                    a != c for a, c in zip(ours, eager_rows[: len(ours)], strict=True)
                ),
            }
    write_json_atomic(args.out, record)
    _print(record)
    print(f"written {args.out}")


def _print(record: dict) -> None:
    print(f"{record['device']}, {record['dtype']}, {record['threads']} threads")
    n = record["natural_batch1"]
    print(f"\nbatch 1, natural length ({n['rows']} rows), checks: {n['checks']}")
    print(f"{'variant':40}{'ms/utt':>9}{'p25-p75':>14}{'tok/s':>8}{'vs HF':>7}")
    for name, r in n["results"].items():
        spread = f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f}"
        print(
            f"{name:40}{r['median_ms']:9.1f}{spread:>14}{r['tokens_per_s']:8.0f}{r['tokens_per_s_vs_hf']:6.1f}x"
        )
    for key, per in (("fixed_batch1", "ms/utt"), ("fixed_batch", "ms/batch")):
        f = record[key]
        print(f"\n{key} ({f['rows']} rows, {f['tokens']} tokens each)")
        print(f"{'variant':40}{per:>9}{'p25-p75':>14}{'measured':>10}{'ideal':>8}{'share':>7}")
        for name, r in f["results"].items():
            measured = r.get("reduction", r.get("throughput_gain"))
            ideal = r.get("ideal_reduction", r.get("ideal_gain"))
            share = r.get("share_of_ideal")
            spread = f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f}"
            print(
                f"{name:40}{r['median_ms']:9.1f}{spread:>14}{measured:+10.1%}"
                + (f"{ideal:+8.1%}" if ideal is not None else f"{'':8}")
                + (f"{share:7.0%}" if share is not None else "")
            )
    if "beam5" in record:
        print(f"\nbeam 5: {record['beam5']}")


if __name__ == "__main__":
    main()
