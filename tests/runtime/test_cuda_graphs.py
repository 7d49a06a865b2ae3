"""The CPU parts of the graph runtime: the fixed-shape steps and the in-graph greedy choice run eagerly
(capture=False) and must equal the eager steps; the pool reuses and evicts by key."""

import pytest
import torch

from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.runtime.cuda_graphs import Captured, GraphedEncoder, GraphedGreedy, GraphedSteps, GraphPool
from ctxprune.runtime.greedy import StepLane, greedy_lanes
from ctxprune.runtime.steps import EagerSteps

OFF = ["dec.0.cross_attn", "dec.1.ffn"]


@pytest.fixture()
def setup(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    mask = torch.tensor([[n not in OFF for n in gw.gate_names]] * 2)
    plan = MaskPlan(mask, gw.gate_names, "cpu")
    with torch.inference_mode():
        enc = gw.encode(random_features[:2])
    prompts = torch.tensor([tiny_tokens.prompt("de", "transcribe")] * 2)
    return gw, tiny_tokens, plan, enc, prompts


def test_captured_without_capture_calls_the_function_every_time():
    calls = []
    captured = Captured(lambda: calls.append(1) or torch.tensor(len(calls)), capture=False)
    assert [int(captured()) for _ in range(3)] == [1, 2, 3]


def test_fixed_shape_steps_equal_eager_steps(setup):
    gw, _, plan, enc, prompts = setup
    with torch.inference_mode():
        eager = EagerSteps(gw, enc, plan, 10)
        fixed = GraphedSteps(gw, plan, 2, prompts.shape[1], 10, capture=False).bind(enc)
        torch.testing.assert_close(fixed.prompt(prompts), eager.prompt(prompts), atol=1e-5, rtol=1e-5)
        for token in (400, 11, 500):
            t = torch.tensor([token, token])
            torch.testing.assert_close(fixed.step(t), eager.step(t), atol=1e-5, rtol=1e-5)
    assert int(fixed.position) == prompts.shape[1] + 3  # the position advanced on the device


def test_greedy_choice_inside_the_graph_equals_the_host_choice(setup):
    gw, special, plan, enc, prompts = setup
    with torch.inference_mode():
        host = greedy_lanes([StepLane(EagerSteps(gw, enc, plan, 14), prompts, special, 2)], 10)
        steps = GraphedSteps(gw, plan, 2, prompts.shape[1], 14, capture=False).bind(enc)
        graphed = greedy_lanes([GraphedGreedy(steps, special, 10, 2, capture=False).bind(prompts)], 10)
    assert graphed == host and all(len(row) >= 2 for row in host[0])  # min_new_tokens held


def test_encoder_graph_runs_the_late_stage_on_its_output(setup, random_features):
    gw, _, plan, enc, _ = setup
    seen = []
    with torch.inference_mode():
        out, late = GraphedEncoder(gw, plan, random_features[:2], capture=False)(
            random_features[:2], lambda e: seen.append(e) or "late"
        )
    torch.testing.assert_close(out, enc)
    torch.testing.assert_close(seen[0], enc)
    assert late == "late"


def test_pool_reuses_keys_and_drops_the_least_recently_used(setup):
    gw, special, _, enc, prompts = setup
    pool = GraphPool(gw, capture=False, max_graphs=2)
    rows = [tuple(n not in off for n in gw.gate_names) for off in ([], OFF, ["dec.0.ffn"])]
    first = pool.steps(rows[0], prompts, 10, enc)
    assert pool.steps(rows[0], prompts, 10, enc) is first and pool.keys_built == 1
    pool.steps(rows[1], prompts, 10, enc)
    pool.steps(rows[2], prompts, 10, enc)  # a third key: the first goes
    assert pool.keys_built == 3 and pool.steps(rows[0], prompts, 10, enc) is not first
