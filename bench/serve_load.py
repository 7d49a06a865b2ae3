"""Load test of `ctxprune serve` (issue 17): bounded concurrent clients on the loopback address, a mix of
tasks and languages, dense against gate sets, under each batching policy.

The workload: the demo corpus' test split (synthesized voices; en, de, es, fr, it; transcribe and
translate, with references) and the five real LibriVox clips, copied with a manifest into one folder
(`--workload`, built on first use) so that it can travel to the GPU machine.

For each batching policy a server is started (`python -m ctxprune.cli serve`, loopback only). First
every request is sent alone, once per model: the texts each model gives alone (the truth the load
phase is checked against; it also warms the server up) and their WER/BLEU against the references.
Then, per model and concurrency level, a closed loop: `c` clients each send their next request when
the previous one is answered, for `--duration` seconds or `--count` requests, after a warm-up at that
level. Per level: throughput (requests and audio seconds per second), latency p50/p95/p99, errors by
kind, and the check that every answer is its own request's text: equal to the text alone, or at least
closer to it than to any other request's (else "swapped"); a request with no answer is "lost".
Last, the overload phase: an open loop (Poisson arrivals) at `--overload` times the best throughput
measured for each gate set model: the server must shed with 429 and lose nothing.

Usage: python bench/serve_load.py [--device cpu|cuda] [--dtype fp32|fp16] [--gates DIR ...] [--adapter DIR]
           [--policies static,continuous,grouped] [--concurrency 1,4,8] [--duration 20] [--count 400]
           [--max-batch 16] [--max-queue 8] [--overload 2.0] [--ray-replicas N]
           [--out results/serve_load_cpu.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import asyncio
import json
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import httpx2
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from ctxprune.eval.librivox import librivox_references
from ctxprune.eval.metrics import asr_scores, translation_scores
from ctxprune.paths import ARTIFACTS, cache_dir, write_json_atomic

DEMO_CORPUS = cache_dir() / "demo" / "corpus"


def build_workload(out: Path, corpus: Path) -> list[dict]:
    """Copy the test split's audio and the LibriVox clips into `out` with a manifest (once)."""
    manifest = out / "workload.json"
    if manifest.is_file():
        return json.loads(manifest.read_text())
    if not (corpus / "test.jsonl").is_file():
        sys.exit(f"error: {corpus}/test.jsonl not found; `make demo` builds the demo corpus")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    items = []
    for line in (corpus / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        reference = row["text"] if row["task"] == "transcribe" else row["english"]
        source = corpus / row["audio"]
        items.append({"id": row["id"], "audio": row["audio"], "task": row["task"],
                      "language": row["language"], "reference": reference, "source": source})  # fmt: skip
    for path, text in sorted(librivox_references().items()):
        items.append({"id": path.stem, "audio": f"audio/{path.name}", "task": "transcribe", "language": "en",
                      "reference": text, "source": path})  # fmt: skip
    for item in items:
        dest = out / item["audio"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.pop("source"), dest)
    write_json_atomic(manifest, items)
    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, policy: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ctxprune.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--batching", policy, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--max-queue", str(args.max_queue), "--device", args.device, "--dtype", args.dtype]  # fmt: skip
    for g in args.gates:
        cmd += ["--gates", str(g)]
    if args.adapter:
        cmd += ["--adapter", str(args.adapter)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.ray_replicas:
        cmd += ["--ray", "--replicas", str(args.ray_replicas)]
    log = open(args.out.with_suffix(f".{policy}.server.log"), "w")  # noqa: SIM115 (the server outlives this call; a pipe could fill and stall it)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"error: the server exited; see {log.name}")
        try:
            if httpx2.get(url + "/health").status_code == 200:
                return proc, url
        except httpx2.TransportError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("error: the server did not start within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


async def send(http: httpx2.AsyncClient, url: str, item: dict, model: str) -> dict:
    route = "transcriptions" if item["task"] == "transcribe" else "translations"
    data = {"model": model, "language": item["language"]}
    files = {"file": (Path(item["audio"]).name, item["bytes"])}
    t0 = time.perf_counter()
    try:
        r = await http.post(f"{url}/v1/audio/{route}", data=data, files=files)
        status, body = r.status_code, r.json()
    except (httpx2.TransportError, ValueError) as e:
        return {"id": item["id"], "status": type(e).__name__, "latency": time.perf_counter() - t0}
    record = {"id": item["id"], "status": status, "latency": time.perf_counter() - t0}
    if status == 200:
        record["text"] = body["text"]
    return record


async def closed_loop(url, items, model, clients, duration, count, seed=0) -> tuple[list[dict], float]:
    """`clients` clients, each sending its next request when answered, until time or count runs out."""
    order = [items[i % len(items)] for i in range(count)]
    random.Random(seed).shuffle(order)
    queue = iter(order)
    records: list[dict] = []
    deadline = time.perf_counter() + duration

    async def client(http):
        while time.perf_counter() < deadline and (item := next(queue, None)) is not None:
            records.append(await send(http, url, item, model))

    limits = httpx2.Limits(max_connections=clients)
    async with httpx2.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return records, time.perf_counter() - t0


async def open_loop(url, items, model, rate, duration, seed=0) -> tuple[list[dict], float]:
    """Poisson arrivals at `rate` per second for `duration` seconds, whatever the answers."""
    rng = random.Random(seed)
    tasks = []
    async with httpx2.AsyncClient(timeout=600, limits=httpx2.Limits(max_connections=1000)) as http:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duration:
            tasks.append(asyncio.create_task(send(http, url, rng.choice(items), model)))
            await asyncio.sleep(rng.expovariate(rate))
        records = await asyncio.gather(*tasks)
        return list(records), time.perf_counter() - t0


def quantile(values: list[float], q: float) -> float | None:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
        if len(values) > 1
        else None
    )


def summarize(
    records: list[dict], wall: float, alone: dict[str, str | None], durations: dict[str, float]
) -> dict:
    """`alone`: each request's text alone, None where two passes alone disagreed (a window fell back to
    sampling). An answer is checked where its text alone is stable; it is "swapped" when it is not its
    own text but exactly another request's (a text no other request gives alone); "lost" when it got
    neither an answer nor a 429."""
    ok = [r for r in records if r["status"] == 200]
    checked = [r for r in ok if alone[r["id"]] is not None]
    exact = sum(r["text"] == alone[r["id"]] for r in checked)
    by_text = {t: i for i, t in alone.items() if t is not None}
    counts = Counter(t for t in alone.values() if t is not None)  # two requests may share a text alone
    swapped = sum(
        r["text"] != alone[r["id"]] and counts[r["text"]] == 1 and by_text[r["text"]] != r["id"]
        for r in checked
    )
    latencies = [r["latency"] for r in ok]
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": dict(Counter(str(r["status"]) for r in records if r["status"] != 200)),
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(ok) / wall, 3),
        "audio_s_per_s": round(sum(durations[r["id"]] for r in ok) / wall, 2),
        "latency_p50_s": quantile(latencies, 0.50),
        "latency_p95_s": quantile(latencies, 0.95),
        "latency_p99_s": quantile(latencies, 0.99),
        "checked": len(checked),
        "text_equal_to_alone": exact,
        "text_differs_from_alone": len(checked) - exact,
        "swapped": swapped,
        "lost": sum(r["status"] not in (200, 429) for r in records),
    }


def server_counters(url: str, model: str) -> dict[str, float]:
    """The server's cumulative step counters for `model` (its /metrics): steps, windows, mask groups,
    FLOPs executed and dense."""
    wanted = {
        "ctxprune_batch_windows_count": "steps",
        "ctxprune_batch_windows_sum": "windows",
        "ctxprune_batch_signature_groups_sum": "mask_groups",
    }
    out = dict.fromkeys([*wanted.values(), "flops_executed", "flops_dense"], 0.0)
    for family in text_string_to_metric_families(httpx2.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name in wanted:
                out[wanted[sample.name]] = sample.value
            elif sample.name == "ctxprune_flops_total":
                out[f"flops_{sample.labels['kind']}"] = sample.value
    return out


def step_stats(before: dict[str, float], after: dict[str, float]) -> dict:
    """What the server's steps were like during one level: windows and distinct masks per step, and the
    FLOPs share of the windows decoded."""
    d = {k: after[k] - before[k] for k in after}
    steps = d["steps"] or 1
    return {
        "steps": int(d["steps"]),
        "windows_per_step": round(d["windows"] / steps, 2),
        "mask_groups_per_step": round(d["mask_groups"] / steps, 2),
        "flops_executed_share": round(d["flops_executed"] / d["flops_dense"], 4)
        if d["flops_dense"]
        else None,
    }


def alone_texts(url: str, items: list[dict], model: str) -> dict[str, str]:
    """Every request sent alone, one after the other: its text."""
    records, _ = asyncio.run(closed_loop(url, items, model, 1, 1e9, len(items)))
    bad = [r for r in records if r["status"] != 200]
    if bad:
        sys.exit(f"error: {model} failed alone on {bad[:3]}")
    return {r["id"]: r["text"] for r in records}


def quality(items: list[dict], texts: dict[str, str]) -> dict:
    out = {}
    for lang in sorted({i["language"] for i in items}):
        asr = [i for i in items if i["task"] == "transcribe" and i["language"] == lang]
        if asr:
            refs, hyps = [i["reference"] for i in asr], [texts[i["id"]] for i in asr]
            out[f"wer_{lang}"] = round(asr_scores(refs, hyps, lang)["wer"], 4)
    st = [i for i in items if i["task"] == "translate"]
    if st:
        out["bleu_to_en"] = round(
            translation_scores([i["reference"] for i in st], [texts[i["id"]] for i in st])["bleu"], 2
        )
    return out


def goals(results: dict, models: list[str]) -> dict:
    """Per gate set and policy: its best throughput at a p95 no higher than dense's (dense at its
    highest level) against dense's; per model, whether the overload run shed with 429 and lost nothing."""
    out = {}
    for policy, runs in results["policies"].items():
        dense = runs["dense"]["levels"][-1]
        for m in models[1:]:
            fits = [lv for lv in runs[m]["levels"] if (lv["latency_p95_s"] or 1e9) <= dense["latency_p95_s"]]
            best = max((lv["throughput_rps"] for lv in fits), default=0.0)
            out[f"{policy}/{m}"] = {
                "dense_p95_s": dense["latency_p95_s"],
                "dense_rps": dense["throughput_rps"],
                "rps_at_dense_p95": best,
                "ratio": round(best / dense["throughput_rps"], 3),
                "goal_1.3x_met": best >= 1.3 * dense["throughput_rps"],
            }
    for m, run in results.get("overload", {}).get("models", {}).items():
        s = run["summary"]
        shed = s["errors"].get("429", 0)
        out[f"overload/{m}"] = {
            "offered_rps": run["rate_rps"],
            "shed_429": shed,
            "lost": s["lost"],
            "swapped": s["swapped"],
            "goal_sheds_and_loses_nothing": shed > 0 and s["lost"] == 0 and s["swapped"] == 0,
        }
    return out


def run_policy(args, policy: str, items: list[dict], models: list[str], results: dict) -> None:
    """One server under `policy`: texts alone (first policy only), closed loops, and the overload."""
    durations = {i["id"]: i["duration"] for i in items}
    proc, url = start_server(args, policy)
    try:
        runs = results["policies"][policy] = {}
        for model in models:
            if model not in results["alone"]:  # the truth for every policy; a second pass finds sampling
                first, second = (alone_texts(url, items, model) for _ in range(2))
                results["alone"][model] = {i: t if t == second[i] else None for i, t in first.items()}
                results["quality"][model] = quality(items, first)
            runs[model] = {"levels": []}
            for c in args.levels:
                warm_up = closed_loop(url, items, model, c, 1e9, 2 * c, seed=1)
                asyncio.run(warm_up)
                before = server_counters(url, model)
                run = closed_loop(url, items, model, c, args.duration, args.count)
                records, wall = asyncio.run(run)
                summary = summarize(records, wall, results["alone"][model], durations) | {"concurrency": c}
                summary["server"] = step_stats(before, server_counters(url, model))
                runs[model]["levels"].append(summary)
                print(
                    f"{policy:10} {model:30} c={c:3} {summary['throughput_rps']:6.2f} req/s "
                    f"p95 {summary['latency_p95_s'] or 0:6.2f} s errors {summary['errors']} "
                    f"differs {summary['text_differs_from_alone']}/{summary['checked']} "
                    f"swapped {summary['swapped']} {summary['server']}",
                    flush=True,
                )
        if policy == args.overload_policy and args.overload:
            results["overload"] = {"policy": policy, "factor": args.overload, "models": {}}
            for model in models:
                rate = args.overload * max(lv["throughput_rps"] for lv in runs[model]["levels"])
                run = open_loop(url, items, model, rate, args.overload_duration)
                records, wall = asyncio.run(run)
                summary = summarize(records, wall, results["alone"][model], durations)
                results["overload"]["models"][model] = {"rate_rps": round(rate, 3), "summary": summary}
                print(f"overload   {model:30} {rate:6.2f} req/s offered: {summary}", flush=True)
    finally:
        stop_server(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gates", type=Path, action="append", default=None)
    ap.add_argument("--adapter", type=Path, default=None)
    ap.add_argument("--policies", default="static,continuous,grouped")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--overload", type=float, default=2.0, help="Offered load, times the best measured.")
    ap.add_argument("--overload-duration", type=float, default=60.0)
    ap.add_argument("--overload-policy", default=None, help="Policy of the overload run (default: the last).")
    ap.add_argument("--ray-replicas", type=int, default=0, help="Serve on Ray Serve replicas (--ray).")
    ap.add_argument("--corpus", type=Path, default=DEMO_CORPUS)
    ap.add_argument("--workload", type=Path, default=cache_dir() / "serve_workload")
    ap.add_argument("--out", type=Path, default=Path("results/serve_load_cpu.json"))
    args = ap.parse_args()
    args.gates = args.gates or [ARTIFACTS / "gates" / "decoder-flops-0.5-static"]
    args.levels = [int(c) for c in args.concurrency.split(",")]
    policies = args.policies.split(",")
    args.overload_policy = args.overload_policy or policies[-1]
    items = build_workload(args.workload, args.corpus)
    for item in items:
        path = args.workload / item["audio"]
        item["duration"] = soundfile.info(str(path)).duration
        item["bytes"] = path.read_bytes()  # read once, not in the clients' loop
    models = ["dense"] + [g.name for g in args.gates]
    results = {
        "bench": "serve_load",
        "device": args.device,
        "dtype": args.dtype,
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("torch", "transformers", "fastapi", "uvicorn")},
        "workload": {
            "requests": len(items),
            "audio_s": round(sum(i["duration"] for i in items), 1),
            "tasks": dict(Counter(i["task"] for i in items)),
            "languages": dict(Counter(i["language"] for i in items)),
        },
        "server": {
            "ray_replicas": args.ray_replicas,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "max_queue": args.max_queue,
            "gates": [str(g) for g in args.gates],
            "adapter": str(args.adapter) if args.adapter else None,
        },
        "closed_loop": {"concurrency": args.levels, "duration_s": args.duration, "count": args.count},
        "alone": {},
        "quality": {},
        "policies": {},
    }
    for policy in policies:
        run_policy(args, policy, items, models, results)
    results["goals"] = goals(results, models)
    write_json_atomic(args.out, results)
    print(json.dumps(results["goals"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
