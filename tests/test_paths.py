"""paths.py: atomic JSON writes that keep long lists of numbers on one line and read back unchanged."""

import hashlib
import json

import pytest

from ctxprune.paths import ARTIFACTS, predictor_digest, write_json_atomic


def test_number_lists_go_on_one_line_and_everything_reads_back(tmp_path):
    obj = {"stats": {"errors": [3, 0, 12], "x": [-1.5e-05, 2.0]}, "names": ["a", 1], "s": "[1,\n2]", "e": []}
    path = tmp_path / "out.json"
    write_json_atomic(path, obj)
    text = path.read_text()
    assert json.loads(text) == obj
    assert '"errors": [3, 0, 12]' in text and '"x": [-1.5e-05, 2.0]' in text
    assert '"names": [\n' in text  # a list holding a string keeps one item per line
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("gate_set", sorted((ARTIFACTS / "gates").iterdir()), ids=lambda p: p.name)
def test_a_shipped_sets_card_names_the_predictor_it_ships(gate_set):
    """Bench files record this digest, so a set replaced under its name is told apart from the one timed."""
    weights = (gate_set / "predictor.safetensors").read_bytes()
    assert predictor_digest(gate_set) == hashlib.sha256(weights).hexdigest()


def test_a_directory_without_a_card_has_no_digest(tmp_path):
    assert predictor_digest(tmp_path) is None
