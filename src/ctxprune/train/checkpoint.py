"""Training checkpoints without pickle: tensors (trainable weights, optimizer state, RNG states) in
safetensors, everything else in JSON, written to a staging directory and renamed into place, so a run
killed at any moment leaves the previous checkpoint intact."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ctxprune.paths import replace_dir_atomic

TENSORS = "state.safetensors"
META = "state.json"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    directory: Path,
    step: int,
    params: dict[str, nn.Parameter],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    extra: dict | None = None,
) -> None:
    """`params` are the trainable tensors by name (the frozen base model is never copied)."""
    tensors = {f"param.{name}": p.detach().cpu().contiguous() for name, p in params.items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    py_state = random.getstate()
    meta = {
        "step": step,
        "optimizer": opt_meta,
        "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
        **(extra or {}),
    }
    staging = directory.with_name(f".{directory.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(tensors, str(staging / TENSORS))
    (staging / META).write_text(json.dumps(meta))
    replace_dir_atomic(staging, directory)


def load_checkpoint(
    directory: Path,
    params: dict[str, nn.Parameter],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    random_states: bool = True,
) -> dict:
    """Restore everything `save_checkpoint` wrote; returns its JSON metadata (with `step`). Without
    `random_states` the random generators are left as they are (a run finished on another device, where
    a CUDA generator's state does not fit)."""
    tensors = load_file(str(directory / TENSORS))
    meta = json.loads((directory / META).read_text())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param.{name}"])
    _restore_optimizer(optimizer, tensors, meta["optimizer"])
    if not random_states:
        return meta
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, state, gauss = meta["python_rng"]
    random.setstate((version, tuple(state), gauss))
    return meta
