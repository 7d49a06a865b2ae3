"""Training runs on a tiny random Whisper and a small synthesized corpus, on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ctxprune.data.pseudo_labels import generate_pseudo_labels, teacher_name
from ctxprune.data.speaker import SPEAKER, SPEAKER_DIM, embed_corpus
from ctxprune.errors import CtxpruneError
from ctxprune.gating.predictor import GatePredictor
from ctxprune.stack import StackSpec, load_stack
from ctxprune.train.run import Run


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_gate_training_moves_sparsity_to_target_ends_without_noise_and_writes_a_card(quick):
    config = quick(steps=40, lr=0.01, alpha=20.0, target=0.5, where="decoder", deterministic_tail=0.2)
    card = Run(config).train()
    steps = [r for r in _rows(Path(config.out)) if "loss" in r]
    assert steps[0]["expected_s_dec."] < 0.1 and abs(steps[-1]["expected_s_dec."] - 0.5) < 0.1
    assert steps[0]["noise"] == 1.0 and steps[-1]["noise"] == 0.0  # the last steps run inference masks
    assert card["kind"] == "context" and card["target_sparsity"] == 0.5 and card["where"] == "decoder"
    assert 0.0 <= card["achieved_sparsity"] <= 1.0
    assert set(card) >= {
        "achieved_sparsity",
        "sparsity_by",
        "context",
        "config",
        "data",
        "steps",
        "wall_seconds",
    }
    assert set(card["files"]) == {"predictor.json", "predictor.safetensors"}
    predictor = GatePredictor.from_pretrained(Path(config.out) / "predictor")
    assert all(name.startswith("enc.") for name in predictor.config.force_keep)  # where=decoder
    c = card["calibration"]  # after training, dev sparsity is calibrated toward the target
    assert abs(c["sparsity_after"] - 0.5) <= abs(c["sparsity_before"] - 0.5)
    assert predictor.config.logit_shift == list(c["logit_shift"].values())


@pytest.mark.parametrize("budget_per", ["batch", "task"])  # task: the twin of a context set trained so
def test_static_baseline_has_no_context(quick, budget_per):
    card = Run(quick(steps=2, context=[], budget_per=budget_per)).train()
    assert card["kind"] == "static" and card["context"] == []
    assert card["config"]["budget_per"] == budget_per


def test_a_speaker_context_trains_on_cached_vectors_and_evaluates_on_fresh_ones(quick, tiny_corpus):
    """Training reads `data speaker-embed`'s cache; the final dev evaluation and the calibration embed
    the audio they load, and the shipped set asks for the vector it was trained with."""
    embed_corpus(tiny_corpus, "train")
    config = quick(steps=4, context=["task", "language", SPEAKER], calibrate=True)
    run = Run(config)
    batch = run.collate([run.train_set[i] for i in range(3)])
    assert batch["vectors"][SPEAKER].shape == (3, SPEAKER_DIM)
    before = run.predictor.projections[SPEAKER][1].weight.detach().clone()
    card = run.train()
    assert not torch.equal(run.predictor.projections[SPEAKER][1].weight, before)
    assert card["context"] == ["task", "language", SPEAKER] and card["dev"] and "calibration" in card
    stack = load_stack(StackSpec(model=config.model, gates=Path(config.out) / "predictor"))
    assert stack.pipeline.policy.reads(SPEAKER)
    with pytest.raises(CtxpruneError, match="speaker"):  # a caller that forgets the vector is told
        stack.run(torch.zeros(1, 80, 3000), torch.tensor([3000]), ["transcribe"], ["de"])


def test_a_latency_weighted_set_records_its_branch_times_and_loads_with_them(quick):
    config = quick(steps=2, sparsity_by="latency", where="decoder")
    card = Run(config).train()
    assert card["sparsity_by"] == "latency" and set(card["branch_ms"]["gates"]) >= {"dec.0.ffn", "enc.0.attn"}
    stack = load_stack(StackSpec(model=config.model, gates=Path(config.out) / "predictor"))
    assert stack.space.times is not None  # evaluation weighs the same times


def test_adaptation_trains_only_lora_and_saves_an_adapter(quick):
    config = quick(kind="adapt", steps=4, lr=1e-2)
    run = Run(config)
    base = {n: p.detach().clone() for n, p in run.gw.model.named_parameters() if "lora_" not in n}
    run.train()
    assert all(torch.equal(p, base[n]) for n, p in run.gw.model.named_parameters() if "lora_" not in n)
    adapter = load_file(str(Path(config.out) / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero


def test_existing_run_needs_resume(quick):
    config = quick(steps=2)
    Run(config).train()
    with pytest.raises(CtxpruneError, match="--resume"):
        Run(config).train()


def _cli(config, *extra):
    args = ["--data", config.data, "--out", config.out, "--model", config.model, "--steps", str(config.steps)]
    args += ["--batch-size", str(config.batch_size)]
    for key in (
        "workers",
        "eval_every",
        "eval_limit",
        "eval_max_tokens",
        "save_every",
        "log_every",
        "warmup",
    ):
        args += ["--set", f"{key}={getattr(config, key)}"]
    return [sys.executable, "-m", "ctxprune.cli", "train", "gates", *args, *extra]


def test_sigkill_then_resume_matches_an_uninterrupted_run(quick, tmp_path):
    whole = quick(steps=6, out=str(tmp_path / "whole"))
    Run(whole).train()
    broken = quick(steps=6, out=str(tmp_path / "broken"))
    proc = subprocess.Popen(_cli(broken), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = Path(broken.out) / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while not (state.exists() and json.loads(state.read_text())["step"] >= 2) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(state.read_text())["step"] < 6, "the run finished before it could be killed"
    done = subprocess.run(_cli(broken, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = load_file(str(Path(whole.out) / "predictor" / "predictor.safetensors"))
    b = load_file(str(Path(broken.out) / "predictor" / "predictor.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert [r["step"] for r in _rows(Path(broken.out)) if "loss" in r] == list(range(1, 7))


def test_two_process_data_parallel_smoke(quick, tmp_path):
    config = quick(steps=2, out=str(tmp_path / "ddp"), batch_size=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ctxprune.cli"]
    cmd += _cli(config)[3:]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((Path(config.out) / "card.json").read_text())
    assert card["hardware"]["processes"] == 2


def test_joint_gate_lora_sits_on_the_merged_adapter_and_ships_in_the_gate_set(quick, tmp_path):
    adapt = quick(kind="adapt", steps=2, out=str(tmp_path / "adapt"))
    Run(adapt).train()
    adapter = Path(adapt.out) / "adapter"
    config = quick(steps=2, adapter=str(adapter), train_lora=True, lora_lr=1e-5, lr=0.05, lora_rank=4)
    with pytest.raises(CtxpruneError, match="pseudo-label"):  # the adapted teacher's labels, not base's
        Run(config).train()
    assert not Path(config.out).exists()  # refused before anything was written
    teacher = load_stack(StackSpec(config.model, adapter))
    generate_pseudo_labels(teacher, Path(config.data), teacher_name(config.model, adapter), max_new_tokens=4)
    run = Run(config)
    lora_before = {n: p.detach().clone() for n, p in run.params.items() if n.startswith("lora.")}
    assert lora_before and [g["base_lr"] for g in run.optimizer.param_groups] == pytest.approx(
        [3.0, 0.005, 1e-5]  # two steps: the gate biases get the rate to travel 6 logits in them
    )
    assert all(".decoder." in n for n in lora_before)  # where=decoder: no LoRA in the encoder
    run.train()
    assert any(not torch.equal(run.params[n], p) for n, p in lora_before.items())

    gate_set = Path(config.out) / "predictor"
    lora = load_file(str(gate_set / "lora" / "adapter_model.safetensors"))
    assert lora and all(v.dtype == torch.float16 for v in lora.values())
    card = json.loads((Path(config.out) / "card.json").read_text())
    assert {"lora/adapter_model.safetensors", "base_adapter.json"} <= set(card["files"])

    stack = load_stack(StackSpec(config.model, adapter, gate_set))
    trained = dict(run.peft.named_modules())
    loaded = dict(stack.gated.model.named_modules())
    name = "model.decoder.layers.0.self_attn.q_proj"
    layer = trained[f"base_model.model.{name}"]
    expected = layer.base_layer.weight + layer.get_delta_weight("default")
    torch.testing.assert_close(loaded[name].weight, expected.detach(), atol=1e-3, rtol=1e-3)
    # the loop guard's teacher: the adapted model before the gate set's LoRA, with the same encoder
    kept = dict(stack.pipeline.teacher.model.named_modules())[name].weight
    torch.testing.assert_close(kept, layer.base_layer.weight.detach())
    assert stack.pipeline.teacher_shares_encoder and not torch.equal(kept, loaded[name].weight)
    for k, v in run.predictor.state_dict().items():
        torch.testing.assert_close(stack.policy.predictor.state_dict()[k], v)


def test_a_gate_set_refuses_a_missing_or_different_adapter(quick, tmp_path):
    adapters = []
    for seed in (0, 1):
        adapt = quick(kind="adapt", steps=1, seed=seed, out=str(tmp_path / f"adapt{seed}"))
        Run(adapt).train()
        adapters.append(Path(adapt.out) / "adapter")
    config = quick(steps=1, adapter=str(adapters[0]), kl_weight=0.0, label_weight=1.0)  # references only
    Run(config).train()
    gate_set = Path(config.out) / "predictor"
    with pytest.raises(CtxpruneError, match="pass it with --adapter"):
        load_stack(StackSpec(config.model, None, gate_set))
    with pytest.raises(CtxpruneError, match="another adapter"):
        load_stack(StackSpec(config.model, adapters[1], gate_set))


def test_a_retune_starts_from_a_gate_set_calibrates_first_and_trains_only_its_lora(quick, tmp_path):
    first = quick(steps=3, train_lora=True, lora_rank=4, out=str(tmp_path / "first"))
    Run(first).train()
    gate_set = Path(first.out) / "predictor"
    config = quick(
        steps=3, train_lora=True, lora_rank=4, lora_lr=1e-2, start_from=str(gate_set), deterministic_tail=1.0,
        target_warmup=0, out=str(tmp_path / "retune"),
    )  # fmt: skip
    run = Run(config)
    trained = GatePredictor.from_pretrained(gate_set)
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(run.predictor.state_dict()[k], v)
    lora_start = {n: p.detach().clone() for n, p in run.params.items() if n.startswith("lora.")}
    saved = load_file(str(gate_set / "lora" / "adapter_model.safetensors"))
    assert len(saved) == len(lora_start)
    card = run.train()
    rows = _rows(Path(config.out))
    assert "calibration" in rows[0] and rows[0]["step"] == 0  # calibrated before the first step
    assert all(r["noise"] == 0.0 for r in rows if "loss" in r)
    shift = list(card["calibration"]["logit_shift"].values())
    assert GatePredictor.from_pretrained(Path(config.out) / "predictor").config.logit_shift == shift
    for k, v in trained.state_dict().items():  # frozen from the calibration on
        torch.testing.assert_close(run.predictor.state_dict()[k], v)
    assert any(not torch.equal(run.params[n], p) for n, p in lora_start.items())
    first_card = json.loads((Path(first.out) / "card.json").read_text())
    assert card["start_from_card"] == first_card  # the history travels with the gate set
    assert card["steps"] == 3 and card["steps_total"] == 6
    history = [json.loads(line) for line in (Path(config.out) / "start_from_metrics.jsonl").open()]
    assert history == _rows(Path(first.out))
    # Continued again: the history holds both earlier runs, steps counted from the start of training.
    again = replace(config, start_from=str(Path(config.out) / "predictor"), out=str(tmp_path / "again"))
    assert Run(again).train()["steps_total"] == 9
    history = [json.loads(line) for line in (Path(again.out) / "start_from_metrics.jsonl").open()]
    assert history == _rows(Path(first.out)) + [{**r, "step": r["step"] + 3} for r in rows]


def test_a_retune_refuses_a_gate_set_with_another_context(quick, tmp_path):
    first = quick(steps=1, out=str(tmp_path / "first"))
    Run(first).train()
    with pytest.raises(CtxpruneError, match="same --context"):
        Run(
            quick(steps=1, context=[], start_from=str(Path(first.out) / "predictor"), out=str(tmp_path / "b"))
        )


def test_the_log_records_the_learning_rates_applied(quick):
    """Regression: the log showed the base schedule, not the rates applied (after calibration the
    predictor groups learn at 0; a joint LoRA has its own rate)."""
    config = quick(steps=6, train_lora=True, lora_rank=4, lr=0.05, lora_lr=1e-3, deterministic_tail=0.5)
    Run(config).train()
    steps = [r for r in _rows(Path(config.out)) if "loss" in r]
    calibrated = next(r["step"] for r in _rows(Path(config.out)) if "calibration" in r)
    before, after = (
        [r["lr"] for r in steps if r["step"] <= calibrated],
        [r["lr"] for r in steps if r["step"] > calibrated],
    )
    assert before and after and set(after[0]) == {"gate_biases", "predictor_context", "lora"}
    assert all(r["gate_biases"] > 0 and r["lora"] < r["gate_biases"] for r in before)
    assert all(r["gate_biases"] == 0 and r["predictor_context"] == 0 and r["lora"] > 0 for r in after)


class _Stop(Exception):
    pass


def test_a_speed_perturbed_run_resumed_mid_epoch_matches_an_uninterrupted_one(quick, tmp_path):
    """Each row's speed comes from (seed, epoch, row), so a resumed run trains on the same audio."""
    settings = {"steps": 8, "batch_size": 8, "speed_perturb": [0.8, 1.25]}
    whole = quick(out=str(tmp_path / "whole"), **settings)
    Run(whole).train()
    broken = quick(out=str(tmp_path / "broken"), **settings)

    def stop_after_five(step: int, total: int, row: dict) -> None:
        if step == 5:
            raise _Stop

    run = Run(broken)
    assert len(run._batches(0)) < 5, "the interruption should fall in a later epoch than the first"
    with pytest.raises(_Stop):
        run.train(on_progress=stop_after_five)
    resumed = Run(broken)
    resumed.train(resume=True)
    last_epoch = (settings["steps"] - 1) // len(run._batches(0))
    assert resumed.collate.perturb.epoch == last_epoch >= 1  # each epoch drew its own speeds
    a = load_file(str(Path(whole.out) / "predictor" / "predictor.safetensors"))
    b = load_file(str(Path(broken.out) / "predictor" / "predictor.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    plain = quick(out=str(tmp_path / "plain"), steps=8, batch_size=8)
    Run(plain).train()
    c = load_file(str(Path(plain.out) / "predictor" / "predictor.safetensors"))
    assert any(not torch.allclose(a[k], c[k]) for k in a), "the perturbation changed nothing"


def test_a_run_is_finished_from_its_checkpoint_without_its_train_split(quick, monkeypatch):
    """A run whose machine went away in its tail: the last checkpoint becomes the gate set, with the
    calibration the run logged, and the card says where it stopped; the train split is not read."""
    first = quick(steps=2)
    logged = Run(first).train()["calibration"]
    logged = {**logged, "logit_shift": {g: v + 0.5 for g, v in logged["logit_shift"].items()}}
    checkpoint = load_file(str(Path(first.out) / "checkpoint" / "state.safetensors"))
    for stale in ("card.json", "predictor"):
        subprocess.run(["rm", "-r", str(Path(first.out) / stale)], check=True)
    monkeypatch.setattr("ctxprune.train.run.SpeechDataset", lambda *a, **k: pytest.fail("read train"))

    card = Run(replace(first, steps=4)).finish_from_checkpoint(logged)
    assert card["steps"] == 2 and card["stopped_at"] == {"step": 2, "planned_steps": 4}
    assert card["calibration"] == logged
    predictor = GatePredictor.from_pretrained(Path(first.out) / "predictor")
    assert predictor.config.logit_shift == list(logged["logit_shift"].values())
    saved = load_file(str(Path(first.out) / "predictor" / "predictor.safetensors"))
    trained = {n: t for n, t in saved.items() if f"param.predictor.{n}" in checkpoint}
    assert trained  # the predictor's weights are the checkpoint's
    for name, tensor in trained.items():
        torch.testing.assert_close(tensor, checkpoint[f"param.predictor.{name}"])
