"""Reference returns normalise every evaluation: a value that would flip or blow up normalised returns is
refused, naming the task."""

from __future__ import annotations

import json

import pytest

from mtmarl.errors import UserInputError
from mtmarl.evaluation.references import DEFAULT_PATH, load_references


@pytest.mark.parametrize("bad", [-1.0, 1e-300, True, "3", None, float("inf")])
def test_a_reference_that_is_not_a_usable_number_is_refused_naming_its_task(tmp_path, bad):
    path = tmp_path / "references.json"
    path.write_text(json.dumps({"lbf:grid=6": {"return": 0.5}, "lbf:grid=8": {"return": bad}}))
    with pytest.raises(UserInputError, match=r"task lbf:grid=8 has return .*; want a finite number") as err:
        load_references(path)
    assert "\n" not in str(err.value)


def test_good_references_load_as_floats_and_the_bundled_ones_are_all_usable(tmp_path):
    path = tmp_path / "references.json"
    path.write_text(json.dumps({"a": {"return": 2}, "b": 0.25, "c": {"return": 0}}))
    assert load_references(path) == {"a": 2.0, "b": 0.25, "c": 0.0}
    assert all(v > 0 for v in load_references(DEFAULT_PATH).values())
