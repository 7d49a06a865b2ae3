"""A request through the runtime: context features, two-stage mask decisions, and decoding with the
decided masks, on every execution path."""

from dataclasses import replace

import pytest
import torch

import ctxprune.runtime.pipeline as pipeline_module
from ctxprune.errors import CtxpruneError
from ctxprune.gating.policy import DenseMasks, policy_for
from ctxprune.gating.predictor import GatePredictor
from ctxprune.gating.skip import MaskPlan
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_context import pooled_encoder, pooled_log_mel, whisper_predictor_config
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.runtime.greedy import greedy_decode
from ctxprune.runtime.pipeline import Fallback, Pipeline


def _pipeline(gw, special, predictor=None):
    """The pipeline of a predictor's policy (dense without one)."""
    policy = policy_for(predictor) if predictor is not None else DenseMasks(whisper_gate_space(gw))
    return Pipeline(gw, special, policy)


def tokens_at_most(n: int, path: str = "auto") -> DecodeOptions:
    return DecodeOptions(max_new_tokens=n, path=path)


@pytest.fixture()
def other_features() -> torch.Tensor:
    """A second request's features, unlike `random_features` (a stale buffer would show)."""
    return torch.randn(4, 80, 3000, generator=torch.Generator().manual_seed(2)) + 0.5


def _predictor(gw, seed=0, **kw):
    space = whisper_gate_space(gw)
    p = GatePredictor(whisper_predictor_config(gw.config, space, ["en", "de"], **kw))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in p.named_parameters():
            if "head" in name:
                param.normal_(std=2.0)
    return p.eval()


def test_pooled_context_ignores_padding():
    feats = torch.randn(2, 80, 3000)
    feats[1, :, 100:] = 99.0  # padding region of row 1
    pooled = pooled_log_mel(feats, torch.tensor([3000, 100]))
    torch.testing.assert_close(pooled[1, :80], feats[1, :, :100].mean(-1))
    enc = torch.randn(2, 1500, 8)
    torch.testing.assert_close(pooled_encoder(enc, torch.tensor([3000, 100]))[1], enc[1, :50].mean(0))


def test_run_uses_the_predicted_masks(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    pruned = _pipeline(gw, tiny_tokens, _predictor(gw))
    frames = torch.tensor([3000, 2000, 1000, 500])
    tasks, langs = ["transcribe", "translate", "transcribe", "translate"], ["en", "de", "de", "en"]
    result = pruned.run(random_features, frames, tasks, langs, options=tokens_at_most(6))
    assert result.mask.shape == (4, len(gw.gate_names))
    assert 0 < result.mask.float().mean() < 1  # some branches ran, some did not
    # decoding with the returned masks by hand gives the same tokens
    plan = MaskPlan(result.mask, gw.gate_names, "cpu")
    prompts = torch.tensor([tiny_tokens.prompt(lang, t) for lang, t in zip(langs, tasks, strict=True)])
    with torch.inference_mode():
        enc = gw.encode(random_features, plan)
        assert greedy_decode(gw, enc, prompts, tiny_tokens, plan, max_new_tokens=6) == result.tokens
    for executed, dense in result.flops(pruned.space, prompt_len=4):
        assert 0 < executed < dense


@pytest.mark.parametrize(
    ("where", "context"),
    [("decoder", None), ("both", None), ("decoder", ["language", "encoder"])],
)
def test_graph_path_equals_eager_path(
    tiny_whisper, tiny_tokens, random_features, other_features, monkeypatch, where, context
):
    """The fixed-shape path that CUDA captures (late gates inside the encoder's graph, rows grouped by
    signature, greedy choice inside the step), run eagerly here: the same masks and tokens, over two
    requests in a row. The gates read each request's own pooled audio (not a buffer's stale one), pooled
    inside the encoder's graph from its features buffer where every early gate is open (`decoder`),
    from the request's features before the encoder otherwise."""
    gw = GatedWhisper(tiny_whisper)
    keep = [n for n in gw.gate_names if n.startswith("enc.")] if where == "decoder" else []
    kwargs = {"context": context} if context else {}
    predictor = _predictor(gw, force_keep=keep, **kwargs)
    pruned = _pipeline(gw, tiny_tokens, predictor)
    read, pooled = _spy_on_audio(predictor, monkeypatch, pipeline_module)
    reads_audio = "audio" in predictor.config.context
    requests = [
        (random_features, torch.tensor([3000, 2000, 1000, 500])),
        (other_features, torch.tensor([700, 3000, 1500, 2500])),
    ]
    tasks, langs = ["transcribe", "translate"] * 2, ["en", "de", "de", "en"]
    results = {}
    for path in ("eager", "gather"):
        for i, (features, frames) in enumerate(requests):
            read.clear()
            pooled.clear()
            results[path, i] = pruned.run(features, frames, tasks, langs, options=tokens_at_most(6, path))
            assert bool(read) == bool(pooled) == reads_audio
            for audio in read:  # every predictor call read this request's audio
                assert torch.equal(audio, pooled_log_mel(features.float(), frames))
            # pooled from the request's features (float32: `.float()` is the tensor itself), or in the graph
            in_graph = path == "eager" and where == "decoder"
            assert any(f is features for f in pooled) == (reads_audio and not in_graph)
    for i in range(2):
        eager, graphed = results["gather", i], results["eager", i]
        assert torch.equal(eager.mask, graphed.mask) and eager.tokens == graphed.tokens
        assert len({tuple(m) for m in eager.mask.tolist()}) > 1  # several signatures in the batch
    assert pruned.decoding.pool(False).keys_built > 1


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
        ),
    ],
)
def test_decoding_starts_early_on_the_usual_signature(
    tiny_whisper, tiny_tokens, random_features, monkeypatch, request, device
):
    """One row at a time on the fixed-shape path (graphs on CUDA), decoding starts on the decoder
    signature its context had most often, before the mask is read (`runtime.early_start`). Right or
    wrong, masks and tokens are those of the gather path, which starts nothing early; a right guess goes
    on with the lane it started (one start per request), a wrong one starts the right lane behind it."""
    from ctxprune.runtime.cuda_graphs import GraphedGreedy

    gw = GatedWhisper(tiny_whisper.to(device))
    keep = [n for n in gw.gate_names if n.startswith("enc.")]
    pruned = _pipeline(gw, tiny_tokens, _predictor(gw, force_keep=keep).to(device))
    request.addfinalizer(lambda: tiny_whisper.to("cpu"))
    starts = []
    start = GraphedGreedy.start
    monkeypatch.setattr(GraphedGreedy, "start", lambda lane: starts.append(lane) or start(lane))
    outcomes = pruned.guesses.outcomes
    for i, f in enumerate(random_features[[0, 0, 1, 1]]):  # masks may differ between rows 0 and 1
        if i == 3:  # make the usual signature one this request's mask does not have: every gate open
            for _ in range(4):
                pruned.guesses.record(("transcribe", "de"), (True,) * len(gw.gate_names), None)
        starts.clear()
        before = outcomes.copy()
        args = (f[None].to(device), torch.tensor([3000 - 500 * i]), ["transcribe"], ["de"])
        graphed = pruned.run(*args, options=tokens_at_most(6, "graphs"))
        gathered = pruned.run(*args, options=tokens_at_most(6, "gather"))
        assert torch.equal(graphed.mask, gathered.mask) and graphed.tokens == gathered.tokens
        assert not graphed.mask[0].all()
        assert len(starts) == 1 + outcomes["miss"] - before["miss"]
        if i == 1:  # the request before had the same features: the guess was right
            assert outcomes - before == {"hit": 1}
        if i == 3:
            assert outcomes - before == {"miss": 1}
    assert outcomes.total() == 3  # the first request had no guess
    # previous text changes the prompt length every window: nothing is started on a guess
    starts.clear()
    pruned.run(*args, options=tokens_at_most(6, "graphs"), prefixes=[[7]])
    assert outcomes.total() == 3 and len(starts) == 1


def test_prompt_tensors_are_kept_per_prompt_list(tiny_whisper, tiny_tokens):
    """Requests with the prompts of an earlier one reuse its device tensor (no host-to-device copy);
    rows with previous text get a new one, and rows whose prompts differ in length stay lists."""
    pruned = _pipeline(GatedWhisper(tiny_whisper), tiny_tokens)
    cpu = torch.device("cpu")
    first = pruned._prompts(["en", "de"], ["transcribe"] * 2, False, None, cpu)
    assert pruned._prompts(["en", "de"], ["transcribe"] * 2, False, None, cpu) is first
    other = pruned._prompts(["de", "en"], ["transcribe"] * 2, False, None, cpu)
    assert other is not first and torch.equal(other, first.flip(0))
    prefixed = pruned._prompts(["en", "de"], ["transcribe"] * 2, False, [[7], [8]], cpu)
    assert prefixed.tolist() == [[7, *first[0].tolist()], [8, *first[1].tolist()]]
    ragged = pruned._prompts(["en", "de"], ["transcribe"] * 2, False, [[7], []], cpu)
    assert ragged == [[7, *first[0].tolist()], first[1].tolist()]


def _spy_on_audio(predictor, monkeypatch, module) -> tuple[list, list]:
    """(the pooled audio each predictor call reads, the features each `module.pooled_log_mel` call pools)."""
    read, pooled = [], []
    if "audio" in predictor.projections:
        predictor.projections["audio"].register_forward_pre_hook(
            lambda _, inputs: read.append(inputs[0].clone())
        )

    def spied(features, frames):
        pooled.append(features)
        return pooled_log_mel(features, frames)

    monkeypatch.setattr(module, "pooled_log_mel", spied)
    return read, pooled


def test_auto_language_is_detected_and_gates_see_unknown(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    pruned = _pipeline(gw, tiny_tokens, _predictor(gw, context=["language"]))
    frames = torch.tensor([3000, 3000])
    result = pruned.run(
        random_features[:2], frames, ["transcribe"] * 2, [None, None], options=tokens_at_most(4)
    )
    assert set(result.languages) <= set(tiny_tokens.languages)
    assert torch.equal(result.mask[0], result.mask[1])  # same (unknown) language context, same mask


def test_forced_lists_hold_at_inference(tiny_whisper, tiny_tokens, random_features):
    gw = GatedWhisper(tiny_whisper)
    p = _predictor(gw, force_keep=["dec.0.ffn"], force_skip=["enc.0.attn"])
    result = _pipeline(gw, tiny_tokens, p).run(
        random_features, torch.full((4,), 3000), ["transcribe"] * 4, ["en"] * 4, options=tokens_at_most(3)
    )
    assert result.mask[:, gw.gate_names.index("dec.0.ffn")].all()
    assert not result.mask[:, gw.gate_names.index("enc.0.attn")].any()


def test_predictor_for_another_model_is_refused(tiny_whisper, tiny_tokens, tmp_path):
    from ..conftest import make_tiny_whisper

    other = GatedWhisper(make_tiny_whisper(layers=3))
    _predictor(other).save_pretrained(tmp_path)
    space = whisper_gate_space(GatedWhisper(tiny_whisper))
    with pytest.raises(CtxpruneError, match="built for gate space"):
        GatePredictor.from_pretrained(tmp_path, space)


def test_predictor_costs_well_under_one_percent(tiny_whisper):
    from ctxprune.gating.predictor import GateContext
    from ctxprune.models.whisper_costs import count_flops

    gw = GatedWhisper(tiny_whisper)
    p = _predictor(gw)
    ctx = GateContext(["transcribe"], ["de"], torch.randn(1, 160), torch.randn(1, 64))
    predictor_flops = count_flops(lambda: p(ctx))
    dense = whisper_gate_space(gw).executed_flops([True] * len(gw.gate_names), 4, 1)
    assert predictor_flops < 0.01 * dense


@pytest.mark.real
def test_real_all_open_predictor_equals_hf_generate(real_whisper):
    """(a) on the real model: a predictor that keeps every gate decodes exactly HF's greedy tokens."""
    from ctxprune.data.audio import load_audio
    from ctxprune.data.features import features_for
    from ctxprune.eval.librivox import LIBRIVOX_DIR

    gw = GatedWhisper(real_whisper.model)
    space = whisper_gate_space(gw)
    all_open = GatePredictor(whisper_predictor_config(gw.config, space, ["en"])).eval()  # logits start at +3
    clips = [load_audio(p) for p in sorted(LIBRIVOX_DIR.glob("*.wav"))[2:4]]
    feats, frames = features_for(clips)
    result = _pipeline(gw, real_whisper.tokens, all_open).run(feats, frames, ["transcribe"] * 2, ["en"] * 2)
    assert result.mask.all()
    with torch.inference_mode():
        ref = real_whisper.model.generate(
            feats, language="en", task="transcribe", do_sample=False, num_beams=1
        )
    eot = real_whisper.tokens.eot
    assert result.tokens == [r[: r.index(eot)] if eot in r else r for r in ref.tolist()]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_equal_eager_with_a_predictor_on_gpu(
    tiny_whisper, tiny_tokens, random_features, other_features
):
    """A decoder gate set: the late gates and the audio pooling they read are captured in the encoder's
    graph; replays for other requests read those requests' features, not the captured one's."""
    gw = GatedWhisper(tiny_whisper.to("cuda"))
    try:
        keep = [n for n in gw.gate_names if n.startswith("enc.")]
        pruned = _pipeline(gw, tiny_tokens, _predictor(gw, force_keep=keep).to("cuda"))
        requests = [
            (random_features.cuda(), torch.tensor([3000, 2000, 1000, 500])),
            (other_features.cuda(), torch.tensor([700, 3000, 1500, 2500])),
        ]
        tasks, langs = ["transcribe"] * 4, ["en", "de"] * 2
        fixed = pruned._fixed_context(4, requests[0][0].device)
        for features, frames in [*requests, requests[0]]:  # capture, then replays
            graphed = pruned.run(features, frames, tasks, langs, options=tokens_at_most(6))
            assert fixed.pools_audio
            assert torch.equal(fixed.context.audio, pooled_log_mel(features.float(), frames))
            eager = pruned.run(features, frames, tasks, langs, options=tokens_at_most(6, "gather"))
            assert torch.equal(graphed.mask, eager.mask) and graphed.tokens == eager.tokens
    finally:
        tiny_whisper.to("cpu")


def _static_predictor(gw):
    p = _predictor(gw, context=[])
    with torch.no_grad():  # without context only the biases decide: make some of them skip
        p.late_bias.copy_(torch.randn(p.late_bias.shape, generator=torch.Generator().manual_seed(0)))
    return p


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_static_gate_set_mask_is_decided_once(tiny_whisper, tiny_tokens, random_features):
    from ctxprune.gating.predictor import GateContext
    from ctxprune.gating.straight_through import inference_gates

    gw = GatedWhisper(tiny_whisper)
    p = _static_predictor(gw)
    pruned = _pipeline(gw, tiny_tokens, p)
    calls = _count_calls(p)
    tasks, langs = ["transcribe", "translate"] * 2, ["en", "de", "de", "en"]
    for _ in range(3):
        result = pruned.run(random_features, torch.full((4,), 3000), tasks, langs, options=tokens_at_most(3))
    assert calls[0] == 1  # three requests, one decision
    ctx = GateContext(task=tasks, language=langs, encoder=torch.zeros(4, gw.config.d_model))
    with torch.inference_mode():
        assert torch.equal(result.mask, inference_gates(p(ctx)))
    assert 0 < result.mask.float().mean() < 1


def test_static_mask_follows_a_new_logit_shift(tiny_whisper, tiny_tokens, random_features):
    """Regression: the decided-once mask was kept after calibration moved the logit shifts."""
    gw = GatedWhisper(tiny_whisper)
    p = _static_predictor(gw)
    pruned = _pipeline(gw, tiny_tokens, p)
    args = (random_features[:1], torch.full((1,), 3000), ["transcribe"], ["en"])
    before = pruned.run(*args, options=tokens_at_most(2)).mask
    p.config.logit_shift = [-100.0 if n.startswith("dec.") else 0.0 for n in gw.gate_names]
    after = pruned.run(*args, options=tokens_at_most(2)).mask
    dec = torch.tensor([n.startswith("dec.") for n in gw.gate_names])
    assert before[0, dec].any() and not after[0, dec].any()


def test_fixed_context_refuses_a_missing_audio_input(tiny_whisper, tiny_tokens, random_features):
    """Regression: the graph path's fixed buffers kept the previous request's pooled audio when the new
    context had none (a silently stale input); now, as for a missing caller vector, it is an error."""
    from ctxprune.gating.predictor import GateContext
    from ctxprune.runtime.pipeline import FixedContext

    gw = GatedWhisper(tiny_whisper)
    policy = policy_for(_predictor(gw))
    fixed = FixedContext(policy, 2, torch.device("cpu"))
    frames = torch.tensor([3000, 3000])
    audio = pooled_log_mel(random_features[:2], frames)
    fixed.load(GateContext(["transcribe"] * 2, ["en", "de"], audio=audio), frames)
    with pytest.raises(CtxpruneError, match="'audio'"):
        fixed.load(GateContext(["transcribe"] * 2, ["en", "de"]), frames)


def test_loop_guard_decodes_gated_rows_that_looped_again_dense(
    tiny_whisper, tiny_tokens, random_features, monkeypatch
):
    """Rows the guard stops (forced here for rows 0 and 2: the tiny model does not loop) are decoded
    again with every gate open, on a dense encoder where theirs was pruned; the FLOPs count both."""
    from ctxprune.runtime.decoding import BatchDecoding

    gw = GatedWhisper(tiny_whisper)
    torch.manual_seed(0)  # the predictor's every weight, whatever ran before: masks known below
    pruned, dense = _pipeline(gw, tiny_tokens, _predictor(gw, seed=1)), _pipeline(gw, tiny_tokens)
    args = (random_features, torch.full((4,), 3000), ["transcribe"] * 4, ["en", "de", "de", "en"])
    options = DecodeOptions(max_new_tokens=6, count_flops=True, loop_guard=True)
    plain = pruned.run(*args, options=replace(options, loop_guard=False))
    enc_gates = [i for i, n in enumerate(gw.gate_names) if n.startswith("enc.")]
    rerun = [r for r in (0, 2) if not plain.mask[r, enc_gates].all()]
    assert not plain.mask[[0, 2]].all(-1).any() and len(rerun) == 1  # both gated, one encoder pruned

    real = BatchDecoding.decode

    def rows_0_and_2_loop(self, enc, prompts, mask, opts):
        out = real(self, enc, prompts, mask, opts)
        return out._replace(looped=[r in (0, 2) and not bool(mask[r].all()) for r in range(len(mask))])

    monkeypatch.setattr(BatchDecoding, "decode", rows_0_and_2_loop)
    guarded = pruned.run(*args, options=options)
    alone = dense.run(random_features[[0, 2]], args[1][:2], ["transcribe"] * 2, ["en", "de"], options=options)
    assert [guarded.tokens[0], guarded.tokens[2]] == alone.tokens != [plain.tokens[0], plain.tokens[2]]
    assert guarded.tokens[1::2] == plain.tokens[1::2] and torch.equal(guarded.mask, plain.mask)
    first = [Fallback(len(plain.tokens[r]), r in rerun) for r in (0, 2)]
    assert guarded.fallback == [first[0], None, first[1], None]
    assert guarded.flops_decoder == plain.flops_decoder + alone.flops_decoder
    from ctxprune.models.whisper_costs import count_flops

    assert guarded.flops_encoder == plain.flops_encoder + count_flops(
        lambda: gw.encode(random_features[rerun])
    )
    for r, ((executed, whole), (before, _)) in enumerate(
        zip(guarded.flops(pruned.space, 4), plain.flops(pruned.space, 4), strict=True)
    ):
        assert executed > whole if r in (0, 2) else executed == before  # a second decoding costs more
