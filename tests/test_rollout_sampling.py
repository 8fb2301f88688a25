"""Sampling params: presets, overrides, per-bucket overrides, and the never-greedy rule for reasoning models."""

from __future__ import annotations

import pytest

from posttrain.config import load_config
from posttrain.errors import UserError
from posttrain.rollout.sampling import PRESETS, SamplingConfig, SamplingParams, preset, sampling_config


def test_reasoning_preset_values() -> None:
    p = PRESETS["reasoning"]
    assert (p.temperature, p.top_p, p.top_k) == (0.6, 0.95, 20)
    assert not p.greedy
    assert PRESETS["default"].temperature == 1.0 and PRESETS["default"].top_k == 0


def test_overrides_and_buckets_resolve_in_order() -> None:
    cfg = sampling_config({"preset": "reasoning", "max_tokens": 64, "n": 4,
                           "buckets": {"code": {"max_tokens": 128, "stop": ["</answer>"]}, "math": {"top_k": 5}}})
    base = cfg.resolve()
    assert (base.temperature, base.max_tokens, base.n, base.stop) == (0.6, 64, 4, [])
    code = cfg.resolve("code")
    assert (code.temperature, code.max_tokens, code.n, code.stop) == (0.6, 128, 4, ["</answer>"])
    assert cfg.resolve("math").top_k == 5 and cfg.resolve("math").max_tokens == 64
    assert cfg.resolve("other") == base  # a bucket without overrides gets the base params


def test_reasoning_preset_rejects_greedy_with_clear_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match=r"temperature: 0 \(greedy\) is not allowed with the reasoning preset"):
        preset("reasoning", temperature=0)
    with pytest.raises(UserError, match=r"buckets\.math\.temperature: 0"):
        sampling_config({"preset": "reasoning", "buckets": {"math": {"temperature": 0}}})
    # the same rule through a stage config file: the error names the file
    path = tmp_path / "sample.yaml"
    path.write_text("preset: reasoning\ntemperature: 0.0\n")
    with pytest.raises(UserError, match="sample.yaml") as err:
        load_config(SamplingConfig, path)
    assert "greedy" in str(err.value)
    # greedy is fine for the default preset
    assert preset("default", temperature=0).greedy


def test_bad_values_and_unknown_keys_are_user_errors() -> None:
    with pytest.raises(UserError, match="top_p"):
        sampling_config({"top_p": 1.5}, source="cfg.yaml: sampling")
    with pytest.raises(UserError, match="temprature: unknown key"):
        sampling_config({"temprature": 0.5})
    with pytest.raises(UserError, match="expected one of default, reasoning"):
        preset("creative")
    with pytest.raises(UserError, match="buckets.math.n"):
        sampling_config({"buckets": {"math": {"n": 0}}})


def test_check_buckets_refuses_overrides_for_buckets_not_in_the_data() -> None:
    cfg = sampling_config({"buckets": {"math": {"top_k": 5}, "mth": {"top_k": 1}}})
    cfg.check_buckets({"math", "mth", "code"})  # every override is used: fine
    with pytest.raises(UserError, match="unknown bucket\\(s\\) mth; buckets in the data: code, math"):
        cfg.check_buckets({"math", "code"})


def test_with_updates_validates() -> None:
    p = SamplingParams(max_tokens=10)
    assert p.with_updates(max_tokens=3).max_tokens == 3
    with pytest.raises(ValueError):
        p.with_updates(max_tokens=0)


def test_greedy_with_several_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="would all be the same"):
        SamplingParams(temperature=0, n=2)
    cfg = sampling_config({"n": 4, "buckets": {"math": {"temperature": 0}}})
    assert cfg.resolve().n == 4
    with pytest.raises(UserError, match=r"sampling \(bucket math\): .*n: 4 samples with temperature 0"):
        cfg.resolve("math")
