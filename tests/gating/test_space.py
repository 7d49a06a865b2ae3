import pytest

from ctxprune.gating.space import GateCost, GateSpace


def _space(model="m"):
    return GateSpace(
        names=("enc.0.attn", "dec.0.ffn"),
        costs=(GateCost(per_utterance=100.0), GateCost(per_token=10.0, per_token_position=1.0)),
        model=model,
        ungated=GateCost(per_utterance=5.0, per_token=2.0),
        reference_tokens=4,
    )


def test_decode_cost_counts_the_prompt_once_then_single_tokens():
    cost = GateCost(per_utterance=7, per_token=10, per_token_position=1)
    # prompt of 4 fed at once (4 tokens x 4 positions), then 2 more tokens at positions 5 and 6.
    assert cost.decode(prompt_len=4, new_tokens=3) == 7 + 10 * 6 + (16 + 5 + 6)


def test_weights_and_executed_flops():
    space = _space()
    assert space.weights() == [100.0, 10 * 4 + 1 * 10]
    dense = space.executed_flops([True, True], 1, 1)
    assert dense == 5 + 2 + 100 + 10 + 1
    assert space.executed_flops([False, True], 1, 1) == dense - 100


def test_json_round_trip_and_fingerprint():
    space = _space()
    again = GateSpace.from_json(space.to_json())
    assert again == space
    assert again.fingerprint == space.fingerprint != _space(model="other").fingerprint


def test_names_must_be_unique():
    with pytest.raises(ValueError):
        GateSpace(names=("a", "a"), costs=(GateCost(), GateCost()), model="m")


def test_latency_weights_need_measured_times():
    from ctxprune.gating.space import GateCost, GateSpace

    space = GateSpace(("a", "b"), (GateCost(per_utterance=4.0), GateCost(per_token=1.0)), "m")
    with pytest.raises(ValueError, match="no measured branch times"):
        space.weights("latency")
    timed = space.with_times((GateCost(per_token=0.5), GateCost(per_token=0.5)), "cpu")
    assert timed.weights("latency") == [16.0, 16.0] and timed.weights("flops") == space.weights()
    assert GateSpace.from_json(timed.to_json()) == timed
    assert timed.fingerprint == space.fingerprint
