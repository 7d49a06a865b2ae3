import numpy as np
import pytest

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.data.dataset import Collate
from ctxprune.data.manifest import Example
from ctxprune.data.perturb import SpeedPerturbation
from ctxprune.errors import CtxpruneError


def _tone(seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _pitch(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[spectrum.argmax()])


def test_a_faster_copy_is_shorter_and_higher_by_the_factor():
    audio = _tone()
    faster = SpeedPerturbation([1.1])("row", audio)
    assert faster.dtype == np.float32
    assert abs(len(faster) - len(audio) / 1.1) <= 2
    assert abs(_pitch(faster) - 440 * 1.1) < 5
    slower = SpeedPerturbation([0.9])("row", audio)
    assert abs(len(slower) - len(audio) / 0.9) <= 2 and abs(_pitch(slower) - 440 * 0.9) < 5
    assert SpeedPerturbation([1.0])("row", audio) is audio


def test_a_rows_factor_depends_on_seed_epoch_and_row_only():
    perturb = SpeedPerturbation([0.9, 1.0, 1.1], seed=3)
    ids = [f"row{i}" for i in range(60)]
    first = [perturb.factor(i) for i in ids]
    assert first == [SpeedPerturbation([0.9, 1.0, 1.1], seed=3).factor(i) for i in ids]  # another process
    assert set(first) == {0.9, 1.0, 1.1}
    perturb.epoch = 1
    assert [perturb.factor(i) for i in ids] != first
    assert [SpeedPerturbation([0.9, 1.0, 1.1], seed=4).factor(i) for i in ids] != first


@pytest.mark.parametrize("factors", [[], [0.3], [1.0, 2.5]])
def test_factors_out_of_range_are_refused(factors):
    with pytest.raises(CtxpruneError, match="speed_perturb"):
        SpeedPerturbation(factors)


def test_the_collate_perturbs_each_row_before_its_features():
    rows = [
        (Example(f"r{i}", "a.wav", 2.0, "de", "transcribe", "x", "x", "v", 0), _tone(2.0)) for i in range(8)
    ]
    plain = Collate()(rows)
    perturb = SpeedPerturbation([0.9, 1.1], seed=0)
    batch = Collate(perturb=perturb)(rows)
    expected = [round(plain["frames"][i].item() / perturb.factor(f"r{i}")) for i in range(8)]
    assert all(abs(a - b) <= 1 for a, b in zip(batch["frames"].tolist(), expected, strict=True))
    assert not np.allclose(batch["features"].numpy(), plain["features"].numpy())
