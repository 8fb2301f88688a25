"""`posttrain rs`: two rounds of sample -> verify -> SFT on the tiny model (transformers engine in a Ray worker, real
TRL SFT), with the held-out set measured every round, the same worker processes serving every round (new weights
loaded in place), and a second invocation that finds every step done. Plus config errors and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sample import base_overrides, write_parity_tasks
from typer.testing import CliRunner

from posttrain.config import load_config
from posttrain.errors import UserError


def _rs_overrides(model: Path, out: Path, train: Path, heldout: Path) -> list[str]:
    sample = [o for o in base_overrides(model, out, train, "hf")
              if not o.startswith(("model=", "output_dir=", "rollout"))]
    return [f"model={model}", f"output_dir={out}", "rounds=2", "rollout.engine=hf", "rollout.resources.num_cpus=0.5",
            "rollout.engine_kwargs={dtype: float32, max_model_len: 512}",
            *[f"sample.{o}" for o in sample], "sample.sampling.n=2",
            f"heldout.tasks.recipe={heldout}",
            # full-length held-out replies (no stop string): ~200 sampled tokens, so a changed policy shows in them
            "heldout.sampling={n: 2, temperature: 1.0, max_tokens: 24}",
            # a big learning rate so that two steps visibly change what the policy samples
            "sft.train={max_steps: 2, batch_size: 4, learning_rate: 0.02, max_length: 256, save_steps: 100, "
            "report_to: [], lr_scheduler: constant}"]


def _sample_texts(folder: Path) -> list[str]:
    return [s["messages"][-1]["content"] for shard in sorted((folder / "shards").glob("batch_*.jsonl"))
            for line in shard.read_text().splitlines() for s in json.loads(line)["samples"]]


def test_two_rounds_reuse_the_workers_and_measure_the_held_out_set(tiny_model_dir, tmp_path) -> None:
    from posttrain.stages.rs import RSConfig, run_rs, summary_rows

    train = write_parity_tasks(tmp_path / "train", 8, seed=5)
    heldout = write_parity_tasks(tmp_path / "heldout", 4, seed=6)
    out = tmp_path / "rs"
    cfg = load_config(RSConfig, None, _rs_overrides(tiny_model_dir, out, train, heldout))
    manifest = run_rs(cfg).manifest

    rounds = manifest["metrics"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["worker_pids"] == rounds[1]["worker_pids"] == rounds[2]["worker_pids"]  # started once
    assert manifest["outputs"]["final_model"] == str(out / "round_2" / "model")
    assert (out / "model").resolve() == (out / "round_2" / "model").resolve()
    for i in (1, 2):
        folder = out / f"round_{i}"
        round_manifest = json.loads((folder / "manifest.json").read_text())
        assert round_manifest["stage"] == "rs_round" and round_manifest["metrics"] == rounds[i]
        data = json.loads((folder / "data" / "manifest.json").read_text())
        held = json.loads((folder / "heldout" / "manifest.json").read_text())
        sft = json.loads((folder / "model" / "manifest.json").read_text())
        policy = str(tiny_model_dir) if i == 1 else str(out / "round_1" / "model")
        assert data["config"]["model"] == policy and sft["config"]["model"] == policy
        assert data["config"]["seed"] == i - 1 and held["config"]["seed"] == 1234
        assert rounds[i]["sample"]["kept"] == data["metrics"]["rows"] > 0
        assert rounds[i]["heldout"]["pass@1"] == held["metrics"]["total"]["pass@1"]
        assert rounds[i]["heldout_before"] == rounds[i - 1]["heldout"]
        assert rounds[i]["sft"]["steps"] == 2
    # Same held-out seeds every round, different weights: the workers really sample from the new policy.
    texts = [_sample_texts(out / f"round_{i}" / "heldout") for i in range(3)]
    assert texts[0] != texts[1] != texts[2] and len(texts[0]) == len(texts[1]) == 8
    table = summary_rows(manifest)
    assert [row["round"] for row in table] == [0, 1, 2] and table[2]["heldout_pass@1"] == rounds[2]["heldout"]["pass@1"]

    # Started again with the same config: every step is found done (shards, finished SFT), same result.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("batch_*.jsonl")}
    again = run_rs(cfg).manifest
    assert again["metrics"]["rounds"][1:] == [{**r, "worker_pids": a["worker_pids"]}
                                              for r, a in zip(rounds[1:], again["metrics"]["rounds"][1:], strict=True)]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("batch_*.jsonl")} == stamps


def test_rs_config_errors(tiny_model_dir, tmp_path) -> None:
    from posttrain.stages.rs import RSConfig, run_rs

    train = write_parity_tasks(tmp_path / "train", 2)
    base = _rs_overrides(tiny_model_dir, tmp_path / "rs", train, train)
    with pytest.raises(UserError, match=r"rounds: input should be greater than or equal to 1"):
        load_config(RSConfig, None, [*base, "rounds=0"])
    with pytest.raises(UserError, match=r"sft\.train\.learning_rate"):
        load_config(RSConfig, None, [*base, "sft.train.learning_rate=-1"])
    with pytest.raises(UserError, match=r": heldout: required key is missing"):
        load_config(RSConfig, None, [o for o in base if not o.startswith("heldout")])
    with pytest.raises(UserError, match=r"sample\.selection\.policy"):
        load_config(RSConfig, None, [*base, "sample.selection.policy=best"])
    cfg = load_config(RSConfig, None, [*base, "sft.lora={merge: false}"])
    with pytest.raises(UserError, match=r"sft\.lora\.merge: false saves only an adapter"):
        run_rs(cfg)
    cfg = load_config(RSConfig, None, [*base, f"model={tmp_path / 'nowhere'}"])
    with pytest.raises(UserError, match=r"model: model folder .*nowhere.* not found"):
        run_rs(cfg)


def test_cli_dry_runs_and_errors(tiny_model_dir, tmp_path) -> None:
    import posttrain.cli  # noqa: F401  registers `sample` and `rs`
    from posttrain.cli import app

    train = write_parity_tasks(tmp_path / "train", 2)
    config = tmp_path / "rs.yaml"
    config.write_text(f"model: {tiny_model_dir}\noutput_dir: {tmp_path / 'rs'}\n"
                      f"sample: {{tasks: {{recipe: {train}}}}}\nheldout: {{tasks: {{recipe: {train}}}}}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["rs", "--config", str(config), "rounds=3", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "rounds: 3" in result.output and "policy: all_distinct" in result.output

    result = runner.invoke(app, ["sample", "--config", str(config), "--dry-run"])
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
    assert "heldout: unknown key" in result.exception.message

    sample_config = tmp_path / "sample.yaml"
    sample_config.write_text(f"model: {tiny_model_dir}\noutput_dir: {tmp_path / 's'}\ntasks: {{recipe: {train}}}\n"
                             "selection: {policy: best_k}\n")
    result = runner.invoke(app, ["sample", "-c", str(sample_config), "--dry-run", "sampling.n=8"])
    assert result.exit_code == 0, result.output
    assert "n: 8" in result.output and "k: 1" in result.output
