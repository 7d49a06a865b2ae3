from ctxprune.serve.models import DENSE

from .conftest import STATIC


def test_gate_sets_fall_back_to_the_dense_model_the_server_already_holds(served_models):
    dense, pruned = served_models[DENSE].stack, served_models[STATIC.name].stack
    assert pruned.pipeline.teacher is dense.gated  # one dense copy for every set, not one per set
    assert pruned.gated is not dense.gated  # the set's own LoRA is merged into its own copy
    lora_merged = pruned.gated.model.model.decoder.layers[0].self_attn.q_proj.weight
    dense_weight = dense.gated.model.model.decoder.layers[0].self_attn.q_proj.weight
    assert not lora_merged.equal(dense_weight)
