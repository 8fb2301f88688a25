"""Adding a stage is one module and one registry line: the example stage in examples/stages/model_card.py, named by
the pipeline config's ``plugins`` key, is wired after sft, runs for real, is skipped when nothing changed, and a run
killed inside it resumes (the pipeline records it as unfinished and runs it again on the same folders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from posttrain.errors import StageFailed

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "stages" / "model_card.py"


@pytest.fixture
def registry():
    """The plugin registers a stage in this process; leave the registry as the other tests expect it."""
    from posttrain.stages import stages, unregister

    yield
    if any(s.name == "model-card" for s in stages()):
        unregister("model-card")


def _config(tmp_path: Path, model: Path, title: str) -> Path:
    config = {
        "run_dir": str(tmp_path / "run"), "model": str(model), "report_to": [], "plugins": [str(PLUGIN)],
        "data": {"datasets": {"sft": {"recipe": str(ROOT / "data_recipes/sft_tiny.yaml")}}},
        "sft": {"train": {"max_steps": 2, "batch_size": 4, "max_length": 256, "learning_rate": 1.0e-3}},
        "model-card": {"title": title},
    }
    path = tmp_path / f"card-{len(title)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(config: Path) -> dict:
    from posttrain.pipeline import load_pipeline_config, run_pipeline

    cfg, source = load_pipeline_config(config)
    return run_pipeline(cfg, source)


def _statuses(summary: dict) -> dict[str, str]:
    return {row["stage"]: row["status"] for row in summary["stages"] if row["status"] != "disabled"}


def test_a_plugin_stage_is_wired_run_skipped_and_resumed(registry, tiny_model_dir, tmp_path, monkeypatch) -> None:
    from posttrain.pipeline import load_pipeline_config
    from posttrain.pipeline.graph import plan
    from posttrain.stages import stages

    run_dir = tmp_path / "run"
    config = _config(tmp_path, tiny_model_dir, "Tiny SFT")
    cfg, source = load_pipeline_config(config)
    names = [s.name for s in stages()]
    assert names.index("model-card") == names.index("sft") + 1  # `register(..., after="sft")`
    card = plan(cfg, source).stage("model-card").config
    assert card.model == str(run_dir / "sft") and card.output_dir == run_dir / "model-card"

    # 1. It runs after sft, on sft's model, and writes its folder, card and manifest.
    first = _run(config)
    assert _statuses(first) == {"data": "ran", "sft": "ran", "model-card": "ran"}
    out = run_dir / "model-card"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "model.safetensors").stat().st_ino == (run_dir / "sft" / "model.safetensors").stat().st_ino
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Tiny SFT") and "Trained by: `posttrain sft`" in readme and "| steps | 2 |" in readme
    row = next(r for r in first["stages"] if r["stage"] == "model-card")
    assert row["metrics"]["details"]["describes"] == "sft"
    assert "model-card" in (run_dir / "summary.md").read_text()
    assert json.loads((run_dir / "pipeline" / "model-card.state.json").read_text())["status"] == "done"

    # 2. Nothing changed: every stage is skipped, the card is not rewritten.
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert _statuses(_run(config)) == {"data": "skipped", "sft": "skipped", "model-card": "skipped"}
    assert (out / "manifest.json").stat().st_mtime_ns == stamp

    # 3. Another title: only the card runs again, and a crash inside it (after the model files, before the card)
    # leaves it unfinished; the next run resumes it on the same folder and finishes it.
    import sys

    from posttrain.models.folders import replace_with_model as real
    from posttrain.pipeline import run_pipeline

    def crash(src: Path, dst: Path) -> str:
        real(src, dst)
        raise RuntimeError("killed while writing the card")

    cfg, source = load_pipeline_config(_config(tmp_path, tiny_model_dir, "Tiny SFT, retitled"))
    plugin = sys.modules["posttrain_plugin_model_card"]  # loading the config imported the plugin (again)
    monkeypatch.setattr(plugin, "replace_with_model", crash)
    with pytest.raises(StageFailed, match="model-card failed: RuntimeError: killed while writing the card"):
        run_pipeline(cfg, source)
    record = json.loads((run_dir / "pipeline" / "model-card.state.json").read_text())
    assert record["status"] == "failed" and not (out / "manifest.json").exists()
    monkeypatch.setattr(plugin, "replace_with_model", real)
    resumed = run_pipeline(cfg, source)
    assert _statuses(resumed) == {"data": "skipped", "sft": "skipped", "model-card": "ran"}
    assert (out / "README.md").read_text().startswith("# Tiny SFT, retitled")


def test_plugin_and_section_errors_name_the_file_and_key(registry, tiny_model_dir, tmp_path) -> None:
    from posttrain.errors import UserError
    from posttrain.pipeline import load_pipeline_config

    config = _config(tmp_path, tiny_model_dir, "x")
    data = yaml.safe_load(config.read_text())
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**data, "plugins": ["no_such_plugin.py"]}))
    with pytest.raises(UserError, match=r"plugins: no_such_plugin.py: file not found \(relative paths are read"):
        load_pipeline_config(missing)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "plugins"}))
    with pytest.raises(UserError, match=r"unknown.yaml: model-card: unknown key; expected one of: .*sft"):
        load_pipeline_config(unknown)
