import pytest

from ctxprune.errors import CtxpruneError
from ctxprune.train.config import TrainConfig


def test_yaml_round_trip_and_overrides(tmp_path):
    config = TrainConfig(data="d", out="o", target=0.3).override(
        ["lr=3e-4", "context=[task]", "train-lora=true", "speed_perturb=[0.9,1.0,1.1]"]
    )
    assert config.lr == 3e-4 and config.context == ["task"] and config.train_lora is True
    assert config.speed_perturb == [0.9, 1.0, 1.1]
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == config


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope=1"], "unknown config field"),
        (["target=1.5"], "--target"),
        (["where=middle"], "--where"),
        (["lr"], "key=value"),
        (["speed_perturb=[0.9, 3.0]"], "speed_perturb"),
        (["budget_per=language"], "budget_per must be one of batch, task"),
        (["train_every_audio=0"], "train_every_audio must be at least 1"),
        (["onpolicy_every=-1"], "onpolicy_every must be 0"),
    ],
)
def test_bad_values_are_refused(args, message):
    with pytest.raises(CtxpruneError, match=message):
        TrainConfig().override(args)
