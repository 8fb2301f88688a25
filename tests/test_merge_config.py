"""The merge config (defaults per method, settings a method does not use are errors) and the `posttrain merge`
command: --dry-run, KEY=VALUE overrides, a real merge, and exit code 2 without a traceback on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_merge import UP, variant, weights
from typer.testing import CliRunner

from posttrain.config import load_config, validate
from posttrain.errors import UserError
from posttrain.stages.merge import MergeConfig

# Works before and after posttrain/cli/__init__.py imports the merge command module.
CLI = [sys.executable, "-c", "import posttrain.cli; posttrain.cli.main()", "merge"]
MODELS = [{"path": "a"}, {"path": "b", "weight": 2}]


def config(**settings: Any) -> MergeConfig:
    return validate(MergeConfig, {"base": "base", "models": MODELS, "output_dir": "out", **settings}, "merge.yaml")


def test_defaults_per_method_are_filled_in() -> None:
    ties = config()
    assert (ties.method, ties.density, ties.scale, ties.dtype) == ("ties", 0.2, 1.0, None)
    assert [m.weight for m in ties.models] == [1.0, 2.0]
    assert (config(method="task_arithmetic").density, config(method="task_arithmetic").scale) == (None, 1.0)
    assert (config(method="linear").density, config(method="linear").scale) == (None, None)
    assert config(**{"lambda": 0.4}).scale == 0.4  # `lambda` is the other name of `scale`


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"method": "linear", "density": 0.5}, "density: density is used only by method ties (method is linear)"),
    ({"method": "task_arithmetic", "density": 0.5}, "density: density is used only by method ties"),
    ({"method": "linear", "scale": 2.0}, "scale: scale/lambda is not used by method linear"),
    ({"method": "linear", "lambda": 2.0}, "lambda: scale/lambda is not used by method linear"),
    ({"scale": 1.0, "lambda": 2.0}, "give either scale or lambda"),
    ({"method": "ties", "models": [{"path": "a"}, {"path": "b", "weight": -1}]}, "models.1.weight is -1"),
    ({"method": "linear", "models": [{"path": "a", "weight": 1}, {"path": "b", "weight": -1}]}, "sum, which is 0"),
    ({"method": "slerp"}, "method: input should be 'linear', 'task_arithmetic' or 'ties'"),
    ({"density": 0}, "density: input should be greater than 0"),
    ({"density": 1.5}, "density: input should be less than or equal to 1"),
    ({"dtype": "int8"}, "dtype: input should be 'float32', 'bfloat16' or 'float16'"),
    ({"models": []}, "models: list should have at least 1 item"),
    ({"models": [{"path": "a", "weight": float("nan")}]}, "models.0.weight: input should be a finite number"),
    ({"models": [{"path": "a", "wieght": 1}]}, "models.0.wieght: unknown key"),
    ({"output": "x"}, "output: unknown key"),
])
def test_bad_configs_are_user_errors_naming_the_key(settings: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError) as info:
        config(**settings)
    assert fragment in info.value.message


def test_missing_required_keys() -> None:
    with pytest.raises(UserError) as info:
        validate(MergeConfig, {"models": MODELS}, "merge.yaml")
    assert "merge.yaml: base: required key is missing" in info.value.message
    assert "merge.yaml: output_dir: required key is missing" in info.value.message


def test_the_example_config_loads_and_switches_method_by_override() -> None:
    example = Path(__file__).resolve().parents[1] / "configs" / "merge.yaml"
    cfg = load_config(MergeConfig, example)
    assert (cfg.method, len(cfg.models), cfg.dtype) == ("ties", 2, "bfloat16")
    linear = load_config(MergeConfig, example, ["method=linear", "density=null", "scale=null"])
    assert (linear.method, linear.density, linear.scale) == ("linear", None, None)
    with pytest.raises(UserError, match="density is used only by method ties"):
        load_config(MergeConfig, example, ["method=linear"])


def test_cli_dry_run_prints_the_resolved_config(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump({"base": "base", "models": MODELS, "output_dir": "out"}))
    proc = subprocess.run([*CLI, "--config", str(path), "lambda=0.5", "--dry-run"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed == {"base": "base", "models": [{"path": "a", "weight": 1.0}, {"path": "b", "weight": 2.0}],
                       "method": "ties", "density": 0.2, "scale": 0.5, "dtype": None, "output_dir": "out",
                       "overwrite": False}
    assert not (tmp_path / "out").exists()


def test_cli_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = variant(tiny_model_dir, tmp_path / "bad", edit=lambda s: s.update({UP: s[UP][:8]}))
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump({"base": str(tiny_model_dir), "models": [{"path": str(bad)}],
                                    "method": "task_arithmetic", "output_dir": str(tmp_path / "out")}))
    proc = subprocess.run([*CLI, "--config", str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and UP in proc.stderr.replace("\n", "") and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "--config", str(path), "method=linear", "scale=3"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "scale/lambda is not used" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_merges(tmp_path: Path, tiny_model_dir: Path) -> None:
    import posttrain.cli  # noqa: F401  registers the commands on the app
    from posttrain.cli.common import app

    a = variant(tiny_model_dir, tmp_path / "a", {UP: 4.0})
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump({"base": str(tiny_model_dir), "models": [{"path": str(a)}],
                                    "output_dir": str(tmp_path / "out")}))
    result = CliRunner().invoke(app, ["merge", "--config", str(path), "method=task_arithmetic", "scale=0.25"])
    assert result.exit_code == 0, result.output
    assert "merged model written to" in result.output
    moved = weights(tmp_path / "out")[UP] - weights(tiny_model_dir)[UP]
    assert (moved - 0.25 * 4.0).abs().max().item() < 1e-6
