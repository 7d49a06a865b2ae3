import pytest


@pytest.fixture(scope="session")
def tiny_labels(tiny_model_dir, tiny_corpus):
    """The tiny teacher's pseudo-labels of the tiny corpus (what distillation reads)."""
    from ctxprune.data.pseudo_labels import generate_pseudo_labels, teacher_name
    from ctxprune.stack import StackSpec, load_stack

    stack = load_stack(StackSpec(model=str(tiny_model_dir)))
    return generate_pseudo_labels(stack, tiny_corpus, teacher_name(str(tiny_model_dir)), max_new_tokens=6)


@pytest.fixture()
def quick(tiny_model_dir, tiny_corpus, tiny_labels, tmp_path):
    """Settings for fast CPU runs: a few steps, tiny batches, a short final evaluation."""

    def make(**overrides):
        from ctxprune.train.config import TrainConfig

        base = {"data": str(tiny_corpus), "out": str(tmp_path / "run"), "model": str(tiny_model_dir)}
        base |= {"steps": 6, "batch_size": 4, "workers": 0, "eval_every": 0, "eval_limit": 1}
        base |= {"eval_max_tokens": 4, "save_every": 2, "log_every": 1, "warmup": 1}
        return TrainConfig(**{**base, **overrides})

    return make
