"""Gate training's step: schedules, parameter groups, and the loss through the two-stage policy."""

import pytest
import torch

from ctxprune.data.dataset import Collate, SpeechDataset
from ctxprune.train.gates import GateTask, sparsity_targets


@pytest.fixture()
def task(quick, tiny_whisper, tiny_tokens):
    def make(**overrides):
        return GateTask(tiny_whisper, quick(**overrides), tiny_tokens)

    return make


def test_targets_noise_and_temperature_follow_the_schedule(task):
    t = task(steps=100, target=0.4, target_warmup=20, deterministic_tail=0.2)
    assert [round(x.target, 2) for x in (t.targets_at(0)[0], t.targets_at(9)[0], t.targets_at(50)[0])] == [
        0.02, 0.2, 0.4
    ]  # fmt: skip
    assert t.noise_at(10) == 1.0 and t.noise_at(50) == pytest.approx(0.5) and t.noise_at(80) == 0.0
    assert t.schedule(0) == 1.0 and t.schedule(100) == pytest.approx(0.1)


def test_an_encoder_target_holds_each_stack_to_its_own(quick):
    both = quick(where="both", encoder_target=0.2, target=0.6)
    assert [(x.prefix, x.target) for x in sparsity_targets(both)] == [("enc.", 0.2), ("dec.", 0.6)]
    assert [(x.prefix, x.target) for x in sparsity_targets(quick(where="both"))] == [("", 0.5)]


def test_parameter_groups_freeze_the_predictor_after_calibration(task):
    t = task(lr=0.01, context_lr_scale=0.1, steps=1000)
    groups = t.parameter_groups()
    assert [(g["name"], g["base_lr"]) for g in groups] == [
        ("gate_biases", 0.01),
        ("predictor_context", 0.001),
    ]
    assert all(g["freezes_after_calibration"] for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(t.predictor.parameters()))


def test_short_runs_give_the_gate_biases_the_rate_to_cross_zero(task):
    """From keep logit 3, 360 steps before the tail need a rate of 6 / 360, not the 1e-2 asked for."""
    t = task(lr=0.01, steps=400, deterministic_tail=0.1)
    assert t.predictor.config.initial_keep_logit == 3.0
    assert t.parameter_groups()[0]["base_lr"] == pytest.approx(6 / 360)
    assert t.parameter_groups()[1]["base_lr"] == pytest.approx(0.01 * t.config.context_lr_scale)


@pytest.mark.parametrize(
    ("budget_per", "context"),
    [
        ("batch", None),
        ("task", None),
        ("task", []),  # static with a budget per task: the twin of a context set trained so
    ],
)
def test_loss_reaches_the_gates_and_predicts_the_early_gates_once(
    task, tiny_corpus, tiny_model_dir, budget_per, context
):
    from ctxprune import assets

    settings = {} if context is None else {"context": context}
    t = task(
        where="both",
        target=0.5,
        alpha=10.0,
        kl_weight=0.0,
        label_weight=1.0,
        budget_per=budget_per,
        **settings,
    )
    data = SpeechDataset(str(tiny_corpus), "train")
    loaded = assets.load(str(tiny_model_dir))
    collate = Collate(80, loaded.tokenizer, loaded.tokens)
    batch = collate([data[i] for i in range(3)])
    assert len(set(batch["tasks"])) == 2  # both tasks: a budget per task has two to hold
    calls = [0]
    t.predictor.early_head.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    loss, logs = t.loss(batch, step=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert calls[0] == 1  # regression: the early logits were computed twice per step
    assert torch.isfinite(loss)
    assert {"task_loss", "sparsity_loss", "expected_s_all", "sampled_s_all"} <= set(logs)
    assert t.predictor.early_bias.grad.abs().sum() > 0 and t.predictor.late_bias.grad.abs().sum() > 0


def test_latency_weighting_measures_each_gate_and_keeps_the_times(task, tmp_path):
    from ctxprune.gating.predictor import GatePredictor
    from ctxprune.gating.sparsity import gate_weights

    t = task(sparsity_by="latency", where="decoder")
    space = t.predictor.space
    assert space.times is not None and space.times_device
    weights = gate_weights(space, "latency")
    assert (weights > 0).all() and not torch.equal(weights, gate_weights(space, "flops"))
    t.save(tmp_path / "p")
    loaded = GatePredictor.from_pretrained(tmp_path / "p", space=space)
    assert loaded.space.times == space.times  # stored with the predictor: the card's weights travel


def test_branch_times_are_taken_on_a_copy_without_the_training_lora_at_inference_precision(
    quick, tiny_tokens, monkeypatch
):
    """The LoRA is merged away in a shipped set and the GPU runtime runs fp16: the times must be the
    kernels inference runs, not the training model's."""
    import ctxprune.train.gates as gates
    from ctxprune.train.gates import inference_dtype
    from tests.conftest import make_tiny_whisper

    timed = []
    real = gates.gate_time_costs
    monkeypatch.setattr(gates, "gate_time_costs", lambda gw, prompt: timed.append(gw) or real(gw, prompt))
    model = make_tiny_whisper()  # the LoRA goes into it in place
    t = GateTask(model, quick(sparsity_by="latency", where="decoder", train_lora=True), tiny_tokens)
    (gw,) = timed
    assert gw.model is not model and not any("lora_" in n for n, _ in gw.model.named_parameters())
    assert any("lora_" in n for n, _ in model.named_parameters())  # the training model has its LoRA
    assert next(gw.model.parameters()).dtype == torch.float32 and t.predictor.space.times_device.endswith(
        ", float32"
    )
    assert inference_dtype(torch.device("cuda")) == torch.float16
    assert inference_dtype(torch.device("cpu")) == torch.float32


def test_runs_that_share_a_branch_times_file_weigh_alike(task, tmp_path):
    import json

    from ctxprune.errors import CtxpruneError

    shared = tmp_path / "times.json"
    first = task(sparsity_by="latency", where="decoder", branch_times=str(shared))
    assert shared.is_file()  # the first run measured and wrote them
    record = json.loads(shared.read_text())
    record["gates"]["dec.0.ffn"]["per_token"] = 123.0  # the second run reads, not measures: it sees this
    shared.write_text(json.dumps(record))
    second = task(sparsity_by="latency", where="decoder", branch_times=str(shared))
    names = second.predictor.space.names
    assert second.predictor.space.times[names.index("dec.0.ffn")].per_token == 123.0
    assert (
        second.predictor.space.times[names.index("dec.0.cross_attn")]
        == first.predictor.space.times[names.index("dec.0.cross_attn")]
    )
    shared.write_text(json.dumps({**record, "device": "another GPU, float32"}))
    with pytest.raises(CtxpruneError, match="measured on another GPU, float32"):
        task(sparsity_by="latency", where="decoder", branch_times=str(shared))
