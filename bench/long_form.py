"""Bench (issue 16): long-form transcription of one 3.5 min English recording (the long fixture, built on
this machine with true utterance boundaries), our runtime dense and pruned, sequential and VAD-batched,
against faster-whisper (sequential and its batched pipeline) and the transformers ASR pipeline (30 s
chunks), all from the same Whisper base weights, greedy, language en.

Each system is loaded once, outside the timing, then warmed up and timed over whole transcribe calls
(file in, segments out); the median, min and max real-time factor (wall seconds / audio seconds) are kept,
and WER (Whisper's English normalizer) and the boundary error of the segments come from the last repeat.
All systems are loaded first; rounds then run every system once, in a rotating order, so that a change in
the machine's load falls on all of them. Two goals are computed from the figures (see `goals`).

Usage: python bench/long_form.py [--device cpu|cuda] [--systems ours-dense-vad,faster-whisper-batched,...]
                                 [--warmup 1] [--repeats 3] [--batch-size 8] [--threads N]
                                 [--gates artifacts/gates/decoder-flops-0.5-static] [--fixture-dir DIR]
                                 [--out results/long_form_cpu.json]
faster-whisper systems need the `bench` extra (faster-whisper, ctranslate2); without it they are skipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: never reach for the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from ctxprune import assets
from ctxprune.data.audio import load_audio
from ctxprune.data.long_fixture import LongFixture, boundary_error, build_long_fixture
from ctxprune.eval.librivox import word_error_rate
from ctxprune.paths import ARTIFACTS, SHIPPED_ADAPTER, cache_dir, write_json_atomic
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import BASE_ADAPTER, StackSpec
from ctxprune.transcriber import Transcriber

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_runtimes import ctranslate2_model

OURS = ("ours-dense-sequential", "ours-dense-vad", "ours-pruned-sequential", "ours-pruned-vad")
FASTER = ("faster-whisper-sequential", "faster-whisper-batched")
SYSTEMS = (*OURS, *FASTER, "hf-pipeline-chunked")
WER_TOLERANCE = 0.01  # "equal WER": within this, absolute
# the ASR pipeline's own default is 5 beams (openai-whisper's CLI default): greedy here, as every system
GENERATE = {"language": "en", "task": "transcribe", "num_beams": 1}
COLUMNS = ("system", "RTF median", "RTF min-max", "x real time", "WER", "boundary s", "segments", "FLOPs")


@dataclass
class Output:
    text: str
    segments: list[tuple[float, float]]
    flops_share: float | None = None  # pruned: mean share of dense FLOPs executed, over segments


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ours(args, fixture: LongFixture, name: str) -> Callable[..., Output]:
    gates = args.gates if "pruned" in name else None
    adapter = SHIPPED_ADAPTER if gates is not None and (gates / BASE_ADAPTER).is_file() else None
    spec = StackSpec(adapter=adapter, gates=gates, device=args.device, dtype=args.dtype)
    transcriber = Transcriber(spec, DecodeOptions(path="auto"))

    def run(snap: bool = True) -> Output:
        [r] = transcriber.transcribe(
            [fixture.audio], "transcribe", "en", args.batch_size, vad=name.endswith("-vad"), snap=snap
        )
        if r.error:
            raise RuntimeError(r.error)
        shares = [s.gates["flops_executed_share"] for s in r.segments if s.gates]
        share = statistics.mean(shares) if shares else None
        return Output(r.text, [(s.start, s.end) for s in r.segments], share)

    return run


def faster(args, fixture: LongFixture, name: str) -> Callable[..., Output]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    cuda = args.device.startswith("cuda")
    model = WhisperModel(
        str(ctranslate2_model()), device="cuda" if cuda else "cpu", device_index=int(args.device[5:] or 0),
        compute_type="float16" if cuda else "float32", cpu_threads=torch.get_num_threads(),
    )  # fmt: skip
    audio = str(fixture.audio)
    if name.endswith("batched"):  # its own Silero VAD; without_timestamps defaults to True there
        batched = BatchedInferencePipeline(model)
        call = lambda: batched.transcribe(audio, language="en", beam_size=1, batch_size=args.batch_size)  # noqa: E731
    else:
        call = lambda: model.transcribe(  # noqa: E731
            audio, language="en", beam_size=1, condition_on_previous_text=False, vad_filter=False
        )

    def run() -> Output:
        segments, _ = call()
        segments = list(segments)  # a generator: decoding happens here
        return Output(" ".join(s.text.strip() for s in segments), [(s.start, s.end) for s in segments])

    return run


def hf_pipeline(args, fixture: LongFixture, name: str) -> Callable[..., Output]:
    from transformers import WhisperFeatureExtractor, pipeline

    loaded = assets.load(None, device=args.device, dtype=args.dtype)
    features = WhisperFeatureExtractor.from_pretrained(loaded.path, local_files_only=True)
    asr = pipeline(  # the model is already fp16 on cuda: the pipeline casts its inputs to the model's dtype
        "automatic-speech-recognition", model=loaded.model, tokenizer=loaded.tokenizer,
        feature_extractor=features, chunk_length_s=30, batch_size=args.batch_size, device=args.device,
    )  # fmt: skip
    audio = load_audio(fixture.audio)  # once, outside the timing

    def run() -> Output:
        out = asr(audio, generate_kwargs=GENERATE, return_timestamps=True)
        segments, last = [], 0.0
        for chunk in out["chunks"]:
            start, end = chunk["timestamp"]
            start = last if start is None else start
            last = fixture.duration if end is None else end
            segments.append((start, last))
        return Output(out["text"].strip(), segments)

    return run


def timed(run: Callable[[], Output], cuda: bool) -> tuple[float, Output]:
    sync = torch.cuda.synchronize if cuda else lambda: None
    torch.manual_seed(0)  # the temperature fallback samples: the same draws every call
    sync()
    start = time.perf_counter()
    out = run()
    sync()  # the clock stops when the device is done
    return time.perf_counter() - start, out


def summarize(
    name: str, run: Callable[..., Output], seconds: list[float], outs: list[Output], fixture
) -> dict:
    out, rtf = outs[-1], [s / fixture.duration for s in seconds]
    row = {
        "rtf_median": statistics.median(rtf), "rtf_min": min(rtf), "rtf_max": max(rtf),
        "x_real_time": 1 / statistics.median(rtf), "seconds": seconds,
        "wer": word_error_rate([fixture.reference()], [out.text], "en"),
        "boundary": boundary_error(out.segments, fixture), "segments": len(out.segments),
        "texts_identical_across_repeats": len({o.text for o in outs}) == 1, "text": out.text,
    }  # fmt: skip
    if out.flops_share is not None:
        row["flops_share"] = out.flops_share
    if name == "ours-dense-sequential":  # Whisper's own timestamps, before snapping to speech (not timed)
        row["boundary_unsnapped"] = boundary_error(run(snap=False).segments, fixture)
    return row


def fail(rows: dict, name: str, e: Exception) -> None:
    traceback.print_exc()
    rows[name] = {"error": f"{type(e).__name__}: {e}"}


def measure(runs: dict[str, Callable[..., Output]], rows: dict, args, fixture: LongFixture) -> None:
    """Rounds over every system in a rotating order, so that a change in the machine's load falls on all of
    them: `warmup` untimed rounds, then `repeats` timed ones."""
    cuda, names = args.device.startswith("cuda"), list(runs)
    seconds, outs = {n: [] for n in names}, {n: [] for n in names}
    for r in range(args.warmup + args.repeats):
        warm = r < args.warmup
        phase = f"warm-up {r + 1}/{args.warmup}" if warm else f"repeat {r - args.warmup + 1}/{args.repeats}"
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if "error" in rows[name]:
                continue
            try:
                s, out = timed(runs[name], cuda)
            except Exception as e:
                fail(rows, name, e)
                continue
            log(f"{name}: {phase} {s:.2f} s (RTF {s / fixture.duration:.3f})")
            if not warm:
                seconds[name].append(s)
                outs[name].append(out)
    for name in names:
        try:
            if "error" not in rows[name]:
                rows[name].update(summarize(name, runs[name], seconds[name], outs[name], fixture))
        except Exception as e:
            fail(rows, name, e)


def goal(desc: str, ours: dict[str, dict], theirs: str, rows: dict, min_speedup: float) -> dict:
    """Met when one of `ours` is at least `min_speedup` times as fast as `theirs` (median RTF) with WER at
    most theirs + WER_TOLERANCE; the fastest such system is reported (else the fastest of ours)."""
    ok = {n: r for n, r in ours.items() if "rtf_median" in r}
    if not ok or "rtf_median" not in rows.get(theirs, {}):
        return {"goal": desc, "met": None, "note": "systems missing from this run"}
    ref = rows[theirs]
    fair = {n: r for n, r in ok.items() if r["wer"] <= ref["wer"] + WER_TOLERANCE}
    name = min(fair or ok, key=lambda n: ok[n]["rtf_median"])
    speedup = ref["rtf_median"] / ok[name]["rtf_median"]
    wer_ok = name in fair
    return {"goal": desc, "met": bool(wer_ok and speedup >= min_speedup), "ours": name, "speedup": speedup,
            "required_speedup": min_speedup, "wer_ours": ok[name]["wer"], f"wer_{theirs}": ref["wer"],
            "wer_ok": wer_ok}  # fmt: skip


def goals(rows: dict, device: str) -> dict:
    pick = lambda *names: {n: rows[n] for n in names if n in rows}  # noqa: E731
    gpu = goal(
        "ours-pruned-vad at least 2x faster than hf-pipeline-chunked at equal or better WER",
        pick("ours-pruned-vad"), "hf-pipeline-chunked", rows, 2.0,
    )  # fmt: skip
    cpu = goal(
        "ours (best of ours-dense-vad / ours-pruned-vad) faster than faster-whisper-batched at equal WER",
        pick("ours-dense-vad", "ours-pruned-vad"), "faster-whisper-batched", rows, 1.0,
    )  # fmt: skip
    gpu["applies"], cpu["applies"] = device.startswith("cuda"), device == "cpu"
    return {"gpu": gpu, "cpu": cpu, "wer_tolerance": WER_TOLERANCE}


def machine(device: str) -> dict:
    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        cpuinfo = Path("/proc/cpuinfo")
        lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
        name = name or platform.processor() or platform.machine()
    pkgs = ("torch", "transformers", "faster-whisper", "ctranslate2", "onnxruntime")
    return {"device": device, "device_name": name, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "versions": {p: ver(p) for p in pkgs}}  # fmt: skip


def print_table(rows: dict, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    fixture, device = result["fixture"], result["machine"]["device"]
    table = Table(title=f"long-form, {fixture['duration']:.0f} s of audio, {device}")
    notes = []
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "system" else "right", no_wrap=True)
    for name, r in rows.items():
        if "rtf_median" not in r:
            table.add_row(name, "skipped" if "skipped" in r else "ERROR")
            notes.append(f"{name}: {r.get('skipped') or r.get('error')}")
            continue
        share = f"{r['flops_share']:.3f}" if "flops_share" in r else ""
        spread = f"{r['rtf_min']:.4f}-{r['rtf_max']:.4f}"
        table.add_row(
            name, f"{r['rtf_median']:.4f}", spread, f"{r['x_real_time']:.1f}", f"{r['wer']:.4f}",
            f"{r['boundary']['mean_error_s']:.3f}", str(r["segments"]), share,
        )  # fmt: skip
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for note in notes:
        console.print(note)
    if unsnapped := rows.get("ours-dense-sequential", {}).get("boundary_unsnapped"):
        console.print(f"ours-dense-sequential, boundary s without snapping: {unsnapped['mean_error_s']:.3f}")
    for key in ("gpu", "cpu"):
        g = result["goals"][key]
        figures = g.get("note") or f"speedup {g['speedup']:.2f}x, WER {g['wer_ours']:.4f} ({g['ours']})"
        where = "" if g["applies"] else " (measured on another device)"
        console.print(f"{key} goal{where}: met={g['met']} {figures}")


def in_process(args, systems: list[str], fixture: LongFixture) -> dict:
    """Every model loaded once, up front, then the rounds over all systems."""
    factories = {**dict.fromkeys(OURS, ours), **dict.fromkeys(FASTER, faster), SYSTEMS[-1]: hf_pipeline}
    runs, rows = {}, {}
    for name in systems:
        try:
            began = time.perf_counter()
            runs[name] = factories[name](args, fixture, name)
            rows[name] = {"load_seconds": time.perf_counter() - began}
        except ImportError as e:
            rows[name] = {"skipped": f"missing package: {e.name or e}"}
            log(f"{name}: skipped ({rows[name]['skipped']})")
        except Exception as e:
            fail(rows, name, e)
    measure(runs, rows, args, fixture)
    return rows


def isolated(args, systems: list[str]) -> dict:
    """Each system in a process of its own, as a user runs one tool: on 2 cores, libraries that share a
    process (torch's and CTranslate2's thread pools, four models in memory) slow each other down."""
    passed = ["--device", args.device, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    passed += ["--batch-size", str(args.batch_size), "--gates", str(args.gates), "--seed", str(args.seed)]
    passed += ["--fixture-dir", str(args.fixture_dir)] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in systems:
            out = Path(tmp) / f"{name}.json"
            subprocess.run(
                [sys.executable, __file__, *passed, "--systems", name, "--out", str(out)], check=False
            )
            done = json.loads(out.read_text())["systems"][name] if out.exists() else None
            rows[name] = done or {"error": "its process wrote no result (see the log above)"}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list from: " + ", ".join(SYSTEMS))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch (and CTranslate2) threads")
    ap.add_argument("--gates", type=Path, default=ARTIFACTS / "gates" / "decoder-flops-0.5-static")
    ap.add_argument("--fixture-dir", type=Path, default=cache_dir() / "long_fixture")
    ap.add_argument("--seed", type=int, default=0, help="fixture seed")
    ap.add_argument("--out", type=Path, default=None, help="default results/long_form_{cpu,gpu}.json")
    ap.add_argument(
        "--isolate", action="store_true", help="each system in its own process, one after another"
    )
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(systems) - set(SYSTEMS):
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    cuda = args.device.startswith("cuda")
    args.dtype = torch.float16 if cuda else torch.float32
    args.out = args.out or Path(f"results/long_form_{'gpu' if cuda else 'cpu'}.json")
    if args.threads:
        torch.set_num_threads(args.threads)

    fixture = build_long_fixture(args.fixture_dir, "en", args.seed)
    log(f"fixture {fixture.audio}: {fixture.duration:.1f} s, {len(fixture.utterances)} utterances")
    rows = isolated(args, systems) if args.isolate else in_process(args, systems, fixture)

    result = {
        "bench": "long_form",
        "machine": machine(args.device),
        "fixture": {
            "audio": str(fixture.audio),
            "kind": "en",
            "seed": args.seed,
            "duration": fixture.duration,
            "utterances": len(fixture.utterances),
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "notes": [
            "RTF = wall seconds of one whole transcribe call / audio seconds; models load outside the timing",
            "ours and faster-whisper read the FLAC file themselves (decoding inside the timing); "
            "hf-pipeline-chunked gets the 16 kHz array, loaded once outside the timing",
            "greedy, language en; each system keeps its own default temperature fallback "
            "(torch seeded before every call, so ours and the HF pipeline sample the same on a fallback)",
            "faster-whisper-batched keeps its default without_timestamps=True: segments are its VAD chunks",
            "hf-pipeline-chunked: its chunk merging keeps few of Whisper's segment timestamps (boundary s)",
            "WER (Whisper English normalizer), boundary error and segments come from the last repeat",
            f"{args.warmup} warm-up and {args.repeats} timed rounds "
            + (
                "per system, each system in its own process" if args.isolate else "over all systems, rotating"
            ),
        ],
        "systems": rows,
    }
    result["goals"] = goals(rows, args.device)
    write_json_atomic(args.out, result)
    print_table(rows, result)
    print(f"written to {args.out}")
    if any("error" in r for r in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
