"""Where ctxprune keeps its cache, and atomic writes so an interrupted run never leaves half a file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # the shipped adapter and gate sets (checkout)
SHIPPED_ADAPTER = ARTIFACTS / "lora-adapter"  # the corpus LoRA, for users who adapt to the corpus


def cache_dir() -> Path:
    """`$CTXPRUNE_CACHE`, else `~/.cache/ctxprune`."""
    return Path(os.environ.get("CTXPRUNE_CACHE", Path.home() / ".cache" / "ctxprune")).expanduser()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_text(obj: Any) -> str:
    """Indented JSON, but a list of numbers on one line: an eval's per-row statistics are thousands."""
    return _NUMBER_LIST.sub(_one_line, json.dumps(obj, indent=2, ensure_ascii=False)) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json_text(obj).encode())


# a list of numbers that json.dumps spread over lines (a raw newline never occurs inside a JSON string)
_NUMBER_LIST = re.compile(r"\[\n(?:\s*-?[0-9.eE+-]+,\n)*\s*-?[0-9.eE+-]+\n\s*\]")


def _one_line(match: re.Match) -> str:
    return "[" + ", ".join(item.strip() for item in match.group(0)[1:-1].split(",")) + "]"


def replace_dir_atomic(staging: Path, final: Path) -> None:
    """Move a fully written staging directory into place; readers see the old or the new one, never a mix."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        trash = final.with_name(f".{final.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)


def sha256_files(directory: Path, exclude: set[str] = frozenset()) -> dict[str, str]:
    """sha256 of every file under `directory` (relative path -> hex), for artifact cards."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and str(p.relative_to(directory)) not in exclude
    }


def card_predictor(card: dict) -> str | None:
    """The sha256 of a gate set's predictor weights, from its card: what a set is, whatever its name (a
    shipped set may be replaced under the same name). None where the card records no digest."""
    return card.get("files", {}).get("predictor.safetensors")


def predictor_digest(gate_set: Path) -> str | None:
    """`card_predictor` of the gate set in this directory; None where it has no card."""
    card = gate_set / "card.json"
    return card_predictor(json.loads(card.read_text())) if card.is_file() else None
