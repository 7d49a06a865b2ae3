"""The GPU recipe's run specs (`scripts/distill_on_gpu.sh plan`): what each flag adds to a training run,
checked here because a misread spec costs a device session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "distill_on_gpu.sh"


def plan(*specs: str, **env: str) -> dict[str, list[str]]:
    done = subprocess.run(
        ["bash", str(SCRIPT), "plan", *specs],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    runs = {}
    for line in done.stdout.splitlines():
        name, command = line.split(": ", 1)
        runs[name] = command.split()
    return runs


def setting(args: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return values[-1] if values else None


def test_a_plain_decoder_spec_trains_the_rank_16_lora_on_the_kl_term():
    args = plan("0.5:decoder:flops:context:0")["decoder-flops-0.5-context-seed0"]
    assert args[:2] == ["ctxprune", "train"]
    assert args[args.index("--target") + 1] == "0.5"
    assert args[args.index("--context") + 1] == "task,language,audio,encoder"
    assert (setting(args, "lora_rank"), setting(args, "hidden_weight")) == ("16", None)
    assert setting(args, "train_every_audio") is None


def test_flags_in_any_order_name_the_run_and_set_what_they_say():
    runs = plan(
        "0.5:decoder:latency:context:0+every4+wide+speaker",
        "0.7:decoder:flops:static:2+speed+task",
        STEPS="1400", EVALS="3",
    )  # fmt: skip
    wide = runs["decoder-latency-0.5-context-seed0-wide-speaker-every4"]
    assert (setting(wide, "lora_rank"), setting(wide, "lora_alpha"), setting(wide, "hidden_weight")) == (
        "64",
        "64",
        "1.0",
    )
    assert setting(wide, "train_every_audio") == "4"
    assert wide[wide.index("--context") + 1].endswith(",speaker")
    assert setting(wide, "branch_times") is not None  # a latency run weighs the shared branch times
    static = runs["decoder-flops-0.7-static-seed2-speed-taskbudget"]
    assert static[static.index("--context") + 1] == "none"
    assert (setting(static, "budget_per"), setting(static, "speed_perturb")) == ("task", "[0.9,1.0,1.1]")
    assert (setting(static, "target_warmup"), setting(static, "eval_every")) == ("466", "466")


def test_every_from_the_environment_applies_to_every_run_and_a_flag_overrides_it():
    runs = plan("0.5:decoder:flops:context:0", "0.5:decoder:flops:context:1+every8", EVERY="4")
    assert setting(runs["decoder-flops-0.5-context-seed0-every4"], "train_every_audio") == "4"
    assert setting(runs["decoder-flops-0.5-context-seed1-every8"], "train_every_audio") == "8"


def test_a_steps_flag_sets_that_runs_length_ramp_and_evaluations_alone():
    runs = plan(
        "0.5:decoder:latency:context:1+wide+steps1400",
        "0.5:decoder:latency:context:1",
        STEPS="1000",
        EVALS="2",
    )
    long, short = runs["decoder-latency-0.5-context-seed1-wide"], runs["decoder-latency-0.5-context-seed1"]
    assert long[long.index("--steps") + 1] == "1400"
    assert (setting(long, "target_warmup"), setting(long, "eval_every")) == ("466", "700")
    assert short[short.index("--steps") + 1] == "1000"
    assert (setting(short, "target_warmup"), setting(short, "eval_every")) == ("333", "500")


def test_an_encoder_spec_continued_from_a_set_holds_its_target_from_the_first_step():
    runs = plan("0.3:both:flops:context:0:0.33@/sets/both")
    args = runs["both-flops-0.3-context-seed0-enc0.33-continued"]
    assert args[args.index("--encoder-target") + 1] == "0.33"
    assert (setting(args, "start_from"), setting(args, "target_warmup")) == ("/sets/both", "0")
    assert setting(args, "lora_rank") == "64"


def test_an_on_policy_flag_sets_the_interval_and_continues_from_a_set():
    runs = plan(
        "0.7:decoder:latency:context:0+onpolicy2",
        "0.7:decoder:latency:context:0+onpolicy+steps400@artifacts/gates/decoder-latency-0.7-context",
        STEPS="1400",
    )  # fmt: skip
    scratch = runs["decoder-latency-0.7-context-seed0-onpolicy2"]
    assert (setting(scratch, "onpolicy_every"), setting(scratch, "target_warmup")) == ("2", "466")
    continued = runs["decoder-latency-0.7-context-seed0-continued-onpolicy1"]
    assert setting(continued, "onpolicy_every") == "1" and setting(continued, "target_warmup") == "0"
    assert setting(continued, "start_from") == "artifacts/gates/decoder-latency-0.7-context"
    assert continued[continued.index("--steps") + 1] == "400"
    assert (
        setting(plan("0.7:decoder:latency:context:0")["decoder-latency-0.7-context-seed0"], "onpolicy_every")
        is None
    )


@pytest.mark.parametrize(
    "spec",
    [
        "0.5:decoder:flops:context:0+bogus",
        "0.5:decoder:flops:context:0+onpolicyx",
        "0.5:decoder:flops:context:0+every",
        "0.5:decoder:flops:context:0+steps",
    ],
)
def test_an_unknown_flag_is_refused_in_one_line(spec):
    done = subprocess.run(["bash", str(SCRIPT), "plan", spec], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout.strip().splitlines() == [f"unknown run flag +{spec.split('+')[1]}"]
