import pytest
import torch

from ctxprune.errors import CtxpruneError
from ctxprune.gating.predictor import GateContext, GatePredictor, PredictorConfig
from ctxprune.gating.space import GateCost, GateSpace
from ctxprune.gating.straight_through import straight_through_gates

SPACE = GateSpace(
    names=("enc.0.attn", "enc.0.ffn", "dec.0.self_attn", "dec.0.cross_attn", "dec.0.ffn"),
    costs=tuple(GateCost(per_utterance=float(i + 1)) for i in range(5)),
    model="toy",
)


def _config(**kw):
    base = dict(
        space=SPACE,
        tasks=["transcribe", "translate"],
        languages=["en", "de"],
        audio_dim=6,
        encoder_dim=8,
        late_prefix="dec.",
    )
    return PredictorConfig(**{**base, **kw})


def _ctx(batch=3, **kw):
    g = torch.Generator().manual_seed(0)
    return GateContext(
        task=["transcribe", "translate", "transcribe"][:batch],
        language=["en", "de", "xx"][:batch],
        audio=torch.randn(batch, 6, generator=g),
        encoder=torch.randn(batch, 8, generator=g),
        **kw,
    )


def _randomize(p: GatePredictor):
    torch.manual_seed(0)
    with torch.no_grad():
        for param in p.parameters():
            param.normal_()


def test_logits_have_one_per_gate_and_depend_on_context():
    p = GatePredictor(_config())
    _randomize(p)
    logits = p(_ctx())
    assert logits.shape == (3, 5)
    assert not torch.allclose(logits[0], logits[1])


def test_early_gates_never_read_the_encoder():
    p = GatePredictor(_config())
    _randomize(p)
    ctx = _ctx()
    early = p.early_logits(ctx)
    ctx2 = _ctx()
    ctx2.encoder = ctx2.encoder * 100
    torch.testing.assert_close(p(ctx2)[:, p.early_index], early)
    assert not torch.allclose(p(ctx2)[:, p.late_index], p(ctx)[:, p.late_index])


def test_static_predictor_is_one_mask_for_everyone():
    p = GatePredictor(_config(context=[]))
    _randomize(p)
    logits = p(_ctx())
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[1], logits[2])


def test_unknown_language_uses_its_own_bucket():
    p = GatePredictor(_config(context=["language"]))
    _randomize(p)
    logits = p(_ctx())
    ctx = _ctx()
    ctx.language = ["en", "de", "fr"]  # another unseen language: same bucket as "xx"
    torch.testing.assert_close(p(ctx)[2], logits[2])


def test_named_context_vectors_are_declared_and_required():
    p = GatePredictor(_config(context=["task", "speaker"], vectors={"speaker": 4}))
    _randomize(p)
    a = p(_ctx(vectors={"speaker": torch.zeros(3, 4)}))
    b = p(_ctx(vectors={"speaker": torch.randn(3, 4)}))
    assert not torch.allclose(a, b)
    with pytest.raises(CtxpruneError, match="speaker"):
        p(_ctx())
    with pytest.raises(CtxpruneError, match="unknown context"):
        _config(context=["accent"])


def test_gradients_reach_every_parameter_through_straight_through_gates():
    p = GatePredictor(_config(context=["task", "language", "audio", "encoder", "spk"], vectors={"spk": 3}))
    ctx = _ctx(vectors={"spk": torch.randn(3, 3)})
    gates = straight_through_gates(p(ctx), tau=0.5, generator=torch.Generator().manual_seed(0))
    (gates * torch.arange(1.0, 6.0)).sum().backward()
    for name, param in p.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_save_and_load_round_trip_and_space_check(tmp_path):
    p = GatePredictor(_config(force_skip=["dec.0.ffn"]))
    _randomize(p)
    p.save_pretrained(tmp_path)
    q = GatePredictor.from_pretrained(tmp_path, SPACE)
    torch.testing.assert_close(q(_ctx()), p(_ctx()))
    assert q.force_skip == [4]
    other = GateSpace(names=SPACE.names[:4], costs=SPACE.costs[:4], model="other")
    with pytest.raises(CtxpruneError, match="built for gate space"):
        GatePredictor.from_pretrained(tmp_path, other)
    with pytest.raises(CtxpruneError, match="not a gate predictor"):
        GatePredictor.from_pretrained(tmp_path / "missing")
