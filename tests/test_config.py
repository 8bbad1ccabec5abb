import json
from dataclasses import dataclass, field

import pytest

from relkit.config import collect, convert, defaults, from_dict, parse_sets, read_file
from relkit.errors import RelkitError


@dataclass
class Fit:
    epochs: int = 3
    lr: float = 1e-3
    hidden: tuple[int, ...] = (64, 32)
    head_lr: float | None = None
    lora: bool = False
    name: str = "base"
    tags: list = field(default_factory=lambda: ["a"])


def run(x, y: int, z: str = "zed", *, w: float = 0.5):
    return x


def test_defaults_come_from_the_dataclass_or_the_signature():
    assert defaults(Fit) == {"epochs": 3, "lr": 1e-3, "hidden": (64, 32), "head_lr": None, "lora": False,
                             "name": "base", "tags": ["a"]}
    assert defaults(Fit, "lr", "lora") == {"lr": 1e-3, "lora": False}
    assert defaults(run) == {"z": "zed", "w": 0.5}
    with pytest.raises(KeyError):
        defaults(run, "y")   # no default: a mistake of the caller's, not the user's


def test_a_changed_field_default_is_read_at_once(monkeypatch):
    monkeypatch.setattr(Fit.__dataclass_fields__["epochs"], "default", 9)
    assert defaults(Fit, "epochs") == {"epochs": 9}


@pytest.mark.parametrize("raw, hint, want", [
    ("7", int, 7), ("2.5", float, 2.5), ("1e-3", float, 0.001), ("x", str, "x"),
    ("yes", bool, True), ("TRUE", bool, True), ("1", bool, True), ("no", bool, False), ("0", bool, False),
    ("none", float | None, None), ("null", int | None, None), ("0.1", float | None, 0.1),
    ("128, 64", tuple[int, ...], (128, 64)), ("a,b", tuple[str, ...], ("a", "b")),
])
def test_convert_by_the_type(raw, hint, want):
    got = convert("k", raw, hint)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("raw, hint, message", [
    ("seven", int, "--set k: 'seven' is not a valid int"),
    ("maybe", bool, "--set k: 'maybe' is not a valid bool"),
    ("none", int, "--set k: 'none' is not a valid int"),          # not optional: None is refused
    ("64,x", tuple[int, ...], "--set k: '64,x' is not comma-separated numbers"),
    ("a", list, "--set k: this option cannot be set from the command line"),
])
def test_convert_refuses_what_does_not_fit(raw, hint, message):
    with pytest.raises(RelkitError) as e:
        convert("k", raw, hint)
    assert str(e.value) == message


def test_parse_sets_converts_each_key_by_its_field():
    assert parse_sets(["epochs=5", "head-lr=0.01", " lora = yes", "hidden=16"], Fit) == \
        {"epochs": 5, "head_lr": 0.01, "lora": True, "hidden": (16,)}
    with pytest.raises(RelkitError) as e:
        parse_sets(["colour=red"], Fit)
    assert str(e.value) == ("--set takes KEY=VALUE with KEY one of epochs, lr, hidden, head_lr, lora, name, tags; "
                            "got 'colour=red'")
    with pytest.raises(RelkitError, match="--set takes KEY=VALUE .*got 'epochs'"):
        parse_sets(["epochs"], Fit)


def test_from_dict_refuses_an_unknown_key_naming_it_and_the_known_ones():
    assert from_dict(Fit, {"epochs": 5, "name": "x"}) == Fit(epochs=5, name="x")
    with pytest.raises(RelkitError) as e:
        from_dict(Fit, {"epochs": 5, "colour": "red", "size": 2}, "training option")
    assert str(e.value) == ("unknown training option(s): colour, size; the training options are epochs, lr, "
                            "hidden, head_lr, lora, name, tags")


def test_collect_file_then_sets_then_flags(tmp_path):
    file = tmp_path / "fit.json"
    file.write_text(json.dumps({"epochs": 4, "lr": 0.5, "name": "from-file"}))
    got = collect(Fit, file, ["lr=0.25", "epochs=6"], flags={"epochs": 8, "name": None, "lora": False})
    assert got == {"epochs": 8, "lr": 0.25, "name": "from-file", "lora": False}   # a None flag was not given
    assert collect(Fit) == {}
    file.write_text(json.dumps({"colour": "red"}))
    with pytest.raises(RelkitError, match=r"unknown training option\(s\): colour; the training options are epochs"):
        collect(Fit, file, what="training option")


def test_read_file_says_which_file_is_wrong(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RelkitError, match=f"{bad}: not a readable JSON object of training options"):
        read_file(bad, "training options")
    bad.write_text("[1, 2]")
    with pytest.raises(RelkitError, match=r"not a readable JSON object of options \(it holds a list\)"):
        read_file(bad)
    with pytest.raises(RelkitError, match="missing.json: not a readable JSON object"):
        read_file(tmp_path / "missing.json")


def test_the_library_settings_go_through_it(tmp_path):
    """TrainConfig, StudentConfig and JudgeSpec read through the same helper, with the same errors."""
    from relkit.judge.core import JudgeSpec
    from relkit.student.model import StudentConfig
    from relkit.teacher.config import TrainConfig

    assert from_dict(TrainConfig, {"lr": 1e-4, "lora": True}, "training option") == TrainConfig(lr=1e-4, lora=True)
    with pytest.raises(RelkitError, match=r"unknown judge option\(s\): colour; the judge options are name, model"):
        from_dict(JudgeSpec, {"name": "j", "model": "m", "colour": "red"}, "judge option")
    assert StudentConfig(**parse_sets(["hidden=128,64", "human_weight=0"], StudentConfig)) == \
        StudentConfig(hidden=(128, 64), human_weight=0.0)
    assert defaults(TrainConfig, "epochs", "lora") == {"epochs": 3.0, "lora": False}
