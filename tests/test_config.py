"""Typed configs: YAML loading, dotted overrides, and the error messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.config import Schema, apply_overrides, dump_config, load_config, parse_override
from posttrain.errors import UserError


class Train(Schema):
    learning_rate: float = 1e-5
    steps: int = 10
    tags: list[str] = []


class Lora(Schema):
    r: int = 8


class StageCfg(Schema):
    model: str
    train: Train = Train()
    lora: Lora | None = None


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_loads_yaml_and_applies_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "model: m\ntrain:\n  steps: 3\n")
    cfg = load_config(StageCfg, p, ["train.learning_rate=2e-4", "train.tags=[a, b]", "lora.r=4"])
    assert cfg.model == "m"
    assert cfg.train.steps == 3
    assert cfg.train.learning_rate == pytest.approx(2e-4)
    assert cfg.train.tags == ["a", "b"]
    assert cfg.lora is not None and cfg.lora.r == 4


def test_unknown_key_names_file_path_and_allowed_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "model: m\ntrain:\n  learning_rat: 0.1\n")
    with pytest.raises(UserError) as e:
        load_config(StageCfg, p)
    msg = e.value.message
    assert str(p) in msg and "train.learning_rat" in msg and "unknown key" in msg
    assert "learning_rate" in msg  # the allowed keys are listed


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    p = write(tmp_path, "model: m\ntrain:\n  steps: many\n")
    with pytest.raises(UserError) as e:
        load_config(StageCfg, p)
    assert "train.steps" in e.value.message and "'many'" in e.value.message


def test_missing_required_key(tmp_path: Path) -> None:
    p = write(tmp_path, "train: {}\n")
    with pytest.raises(UserError, match=r"model: required key is missing"):
        load_config(StageCfg, p)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        load_config(StageCfg, tmp_path / "nope.yaml")
    p = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(UserError, match=r"line \d+"):
        load_config(StageCfg, p)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(StageCfg, p)


def test_override_errors() -> None:
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(UserError, match="dotted key"):
        parse_override("a..b=1")
    with pytest.raises(UserError, match="not a section"):
        apply_overrides({"model": "m"}, ["model.x=1"])


def test_override_value_types() -> None:
    assert parse_override("a=3") == (["a"], 3)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a.b=x") == (["a", "b"], "x")
    assert parse_override("a=") == (["a"], "")


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(StageCfg, None, ["model=m", "train.steps=5"])
    p = write(tmp_path, dump_config(cfg))
    assert load_config(StageCfg, p) == cfg


class Item(Schema):
    path: str
    weight: float = 1.0


class WithList(Schema):
    models: list[Item]


def test_override_addresses_list_items_and_errors_name_them(tmp_path: Path) -> None:
    p = write(tmp_path, "models:\n  - {path: a}\n  - {path: b}\n")
    cfg = load_config(WithList, p, ["models.1.weight=2"])
    assert [m.weight for m in cfg.models] == [1.0, 2.0]
    with pytest.raises(UserError, match=r"models\.5: expected an index below 2"):
        load_config(WithList, p, ["models.5.weight=2"])
    bad = write(tmp_path, "models:\n  - {path: a, wieght: 3}\n")
    with pytest.raises(UserError, match=r"models\.0\.wieght: unknown key; expected one of: path, weight"):
        load_config(WithList, bad)


class Paths(Schema):
    output_dir: Path
    data: Path | None = None
    models: dict[str, Path] = {}
    name: str = ""


def test_duplicate_keys_are_refused_naming_file_line_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "model: m\ntrain:\n  steps: 3\nlora: {r: 2}\ntrain:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError) as e:
        load_config(StageCfg, p)  # yaml.safe_load kept only the second `train:` and lost steps: 3
    msg = e.value.message
    assert str(p) in msg and "line 5" in msg and "duplicate key 'train'" in msg and "first at line 2" in msg
    nested = write(tmp_path, "model: m\ntrain:\n  steps: 3\n  steps: 4\n")
    with pytest.raises(UserError, match=r"line 4.*duplicate key 'steps'"):
        load_config(StageCfg, nested)
    # YAML merge keys are not duplicates: an explicit key overrides a merged one by design
    merged = write(tmp_path, "base: &b {steps: 3, learning_rate: 0.5}\nmodel: m\ntrain:\n  <<: *b\n  steps: 4\n")
    from posttrain.config import read_yaml

    assert read_yaml(merged)["train"] == {"steps": 4, "learning_rate": 0.5}
    with pytest.raises(UserError, match="duplicate key 'r'"):
        parse_override("lora={r: 1, r: 2}")


def test_non_utf8_config_is_a_user_error_naming_the_line(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_bytes(b"model: m\ntrain:\n  steps: 3  # caf\xe9\n")
    with pytest.raises(UserError) as e:
        load_config(StageCfg, p)
    assert str(p) in e.value.message and "not valid UTF-8" in e.value.message and "line 3" in e.value.message


def test_missing_file_says_what_a_relative_path_was_resolved_against(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        load_config(StageCfg, Path("nope.yaml"))
    assert "relative to the current folder" in e.value.message and str(tmp_path / "nope.yaml") in e.value.message


@pytest.mark.parametrize("override", ["output_dir=", "output_dir=''", "data=  ", "models.a="])
def test_empty_path_values_are_refused_not_taken_as_the_current_folder(tmp_path: Path, override: str) -> None:
    p = write(tmp_path, "output_dir: out\nmodels: {a: m1}\n")
    with pytest.raises(UserError) as e:
        load_config(Paths, p, [override])
    key = override.split("=")[0]
    assert f"{key}: " in e.value.message and "empty path" in e.value.message
    assert load_config(Paths, p, ["name="]).name == ""  # a plain string may be empty
    assert load_config(Paths, p, ["output_dir=."]).output_dir == Path(".")  # the current folder, said explicitly
