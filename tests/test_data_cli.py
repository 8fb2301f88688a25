"""`posttrain data build` and `posttrain data inspect` through the CLI, on the shipped recipes and on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posttrain.cli import app

ROOT = Path(__file__).resolve().parent.parent
POSTTRAIN = Path(sys.executable).parent / "posttrain"


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real console script; stderr with rich's line wrapping undone (long paths wrap even at 200 columns)."""
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(POSTTRAIN), *args], capture_output=True, text=True, env=env, timeout=120)
    done.stderr = " ".join(done.stderr.split())
    return done


def test_build_and_inspect_shipped_sft_recipe(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sft"
    result = runner.invoke(app, ["data", "build", str(ROOT / "data_recipes/sft_default.yaml"), "--out", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert 200 <= manifest["metrics"]["rows"] <= 600  # the quick start's size
    assert set(manifest["metrics"]["buckets"]) == {"chat", "math", "code", "tool_calling", "instruction_following"}
    assert manifest["metrics"]["malformed"]["count"] == 0
    result = runner.invoke(app, ["data", "inspect", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Buckets", "Sources", "Dropped rows", "tool_calling", "samples/math.jsonl", "not_sampled",
                 "decontamination vs humaneval"):
        assert text in result.output


def test_build_midtrain_with_overrides_and_seed(tmp_path):
    runner = CliRunner()
    out = tmp_path / "mid"
    result = runner.invoke(app, ["data", "build", str(ROOT / "data_recipes/midtrain_default.yaml"), "replay_ratio=0.25",
                                 "--out", str(out), "--seed", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["config"]["replay_ratio"] == 0.25
    assert abs(manifest["metrics"]["replay"]["ratio_actual"] - 0.25) < 0.01
    result = runner.invoke(app, ["data", "build", str(ROOT / "data_recipes/midtrain_default.yaml"), "--out",
                                 str(out), "--dry-run"])
    assert result.exit_code == 0 and "replay_ratio: 0.2" in result.output and "near_dedupe" in result.output


def test_bad_input_exits_2_without_traceback(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("kind: chat\nbuckets:\n  chat:\n    sources: [{path: nowhere.jsonl}]\n")
    result = _cli("data", "build", str(recipe), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "buckets.chat.sources.0.path: file not found: nowhere.jsonl" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    result = _cli("data", "inspect", str(tmp_path))
    assert result.returncode == 2 and "no manifest here" in result.stderr and "Traceback" not in result.stderr


def test_malformed_threshold_through_cli(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"text": "fine row of text"}\nnot json at all\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: text\nbuckets:\n  b:\n    sources: [{path: rows.jsonl}]\n")
    result = _cli("data", "build", str(recipe), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "first at rows.jsonl:2: invalid JSON" in result.stderr


def _text_recipe(tmp_path: Path, rows: int = 40, **extra) -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": f"row {i} of some text"}) + "\n"
                                                 for i in range(rows)))
    recipe = tmp_path / "r.yaml"
    spec = {"kind": "text", **extra, "buckets": {"b": {"sources": [{"path": "rows.jsonl"}], "share": {"count": 4400}}}}
    recipe.write_text(json.dumps(spec))  # JSON is YAML
    return recipe


def test_up_sampling_has_a_ceiling_and_an_opt_in_that_warns(tmp_path):
    recipe = _text_recipe(tmp_path)
    refused = _cli("data", "build", str(recipe), "--out", str(tmp_path / "out"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "buckets.b: 4400 rows from 40 needs 110 copies of its rows, more than max_repeat 100" in refused.stderr
    allowed = _cli("data", "build", str(recipe), "max_repeat=null", "--out", str(tmp_path / "out"), "--quiet")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: buckets.b: up-sampled to 110 copies of some rows" in allowed.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["metrics"]["buckets"]["b"]["max_repeat"] == 110 and len(manifest["metrics"]["warnings"]) == 1
    inspected = _cli("data", "inspect", str(tmp_path / "out"))
    assert inspected.returncode == 0 and "up-sampled to 110 copies" in " ".join(inspected.stdout.split())


def test_usage_mistakes_are_exit_2_not_a_traceback_or_the_current_folder(tmp_path):
    recipe = _text_recipe(tmp_path, max_repeat=None)
    for args, says in [(["--out", ""], "empty path would mean the current folder"),
                       (["--out", str(tmp_path / "o"), "--seed", "-1"], "--seed"),
                       (["--out", str(tmp_path)], "holds an input of this command")]:
        done = _cli("data", "build", str(recipe), *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr and says in done.stderr, done.stderr
    assert not (tmp_path / "data.parquet").exists() and not (tmp_path / "o").exists()
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"kind: text\ndescription: caf\xe9\nbuckets: {b: {sources: [{path: rows.jsonl}]}}\n")
    done = _cli("data", "build", str(latin1), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "line 2): not valid UTF-8" in done.stderr


TOP = {"stage": "data", "kind": "text", "seed": 0, "token_counter": "x"}


@pytest.mark.parametrize("manifest, says", [
    ([1, 2], "manifest is a JSON list"),
    (TOP, "lacks metrics"),
    ({**TOP, "metrics": {"rows": 1}}, "lacks metrics.tokens"),
    ({**TOP, "metrics": {"rows": 1, "tokens": 2, "buckets": {"b": {}}, "sources": [], "malformed": {},
                         "decontamination": {}}}, "not in the shape `posttrain data build` writes"),
])
def test_inspect_of_a_foreign_manifest_is_exit_2(tmp_path, manifest, says):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    done = _cli("data", "inspect", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr and says in done.stderr, done.stderr
