import numpy as np
import pytest

from relkit import LabelScale, RelkitError


def test_default_scale_is_pinterest_five_levels():
    s = LabelScale.default()
    assert s.k == 5
    assert s.names[0] == "not relevant" and s.names[-1] == "highly relevant"
    assert s.gains == (0, 1, 2, 3, 4)
    assert s.levels == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("raw, level", [(1, 1), ("5", 5), (3.0, 3), (" 2 ", 2), ("Relevant", 4),
                                        ("highly relevant", 5), (0, None), (6, None), ("2.5", None),
                                        ("great", None), (None, None), (True, None)])
def test_parse(raw, level):
    assert LabelScale.default().parse(raw) == level


def test_expected_gain():
    s = LabelScale(names=("bad", "fair", "good"), gains=(0, 1, 3))
    assert s.expected_gain(np.array([[0.5, 0.25, 0.25]])).tolist() == [1.0]


@pytest.mark.parametrize("names, gains, message", [
    (("a",), (0,), "at least 2 levels"),
    (("a", "b"), (0,), "2 level names but 1 gains"),
    (("a", "A"), (0, 1), "distinct"),
    (("a", "2"), (0, 1), "must not be numbers"),
    (("a", "b"), (0, 1.5), "non-negative integers"),
    (("a", "b"), (2, 1), "must not decrease"),
])
def test_bad_scales(names, gains, message):
    with pytest.raises(RelkitError, match=message):
        LabelScale(names=names, gains=gains)


def test_json_round_trip():
    s = LabelScale(names=("bad", "fair", "good"), gains=(0, 1, 3))
    assert LabelScale.from_json(s.to_json()) == s
