"""`posttrain pipeline` end to end with configs/pipeline_tiny.yaml: every stage runs for real (data build, midtrain,
SFT, rejection sampling with transformers workers under local Ray, reward model, both RL tracks at once, merge,
calibration, eval); the run folder holds each stage's folder and manifest, the resolved stage configs, fingerprint
records, the summary and the plots; a second run skips everything.

The model is named by a Hub id (a tiny Llama 3 with Llama 3.2's own template and JSON tool calls) resolved offline
from a local Hugging Face cache, as a user's `model: meta-llama/...` would be: every stage keeps that template and
tool format, and the manifests record the Hub commit. One run covers both (a second pipeline run costs two minutes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import render_tool_conversation

from posttrain.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pipeline_tiny.yaml"
REPO = "tiny-org/llama3-json-tools"
STAGE_FOLDERS = {"midtrain": "midtrain", "sft": "sft", "rs": "rs", "rm": "rm", "rl": "rl", "merge": "merge",
                 "calibrate": "calibrate", "eval": "eval"}


def run(run_dir: Path, model: Path, *overrides: str, start: str | None = None, stop: str | None = None) -> dict:
    from posttrain.pipeline import load_pipeline_config, run_pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the config's recipe paths are relative to the repository
        cfg, source = load_pipeline_config(TINY, [f"run_dir={run_dir}", f"model={model}", *overrides])
        return run_pipeline(cfg, source, start=start, stop=stop)


def statuses(summary: dict) -> dict[str, str]:
    return {row["stage"]: row["status"] for row in summary["stages"]}


@pytest.fixture(scope="module")
def hub_model(tiny_family, hub_cache_writer, tmp_path_factory: pytest.TempPathFactory):
    """The Hub id, resolvable offline in this module (also in the pipeline subprocesses, which inherit the env)."""
    home = tmp_path_factory.mktemp("hf_home")
    hub_cache_writer(home, REPO, tiny_family("llama3"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield REPO


@pytest.fixture(scope="module")
def tiny_run(hub_model: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    return run_dir, run(run_dir, hub_model)


def test_every_stage_writes_its_folder_manifest_config_and_record(tiny_run, tiny_family, tmp_path) -> None:
    from posttrain.pipeline.state import HashCache
    from posttrain.stages.sft import SFTStageConfig

    run_dir, summary = tiny_run
    assert statuses(summary) == {s: "ran" for s in ("data", *STAGE_FOLDERS)}
    for name in ("midtrain", "sft", "preference", "tasks", "heldout"):
        assert json.loads((run_dir / "data" / name / "manifest.json").read_text())["stage"] == "data"
    stages = {name: json.loads((run_dir / folder / "manifest.json").read_text())["stage"]
              for name, folder in STAGE_FOLDERS.items()}
    assert stages == {"midtrain": "midtrain", "sft": "sft", "rs": "rs", "rm": "rm", "rl": "rl", "merge": "merge",
                      "calibrate": "calibrate", "eval": "eval"}

    # Wiring: each stage read the previous one's output folder.
    sft = json.loads((run_dir / "sft" / "manifest.json").read_text())["config"]
    assert sft["model"] == str(run_dir / "midtrain") and sft["data"] == str(run_dir / "data" / "sft")
    merge = json.loads((run_dir / "merge" / "manifest.json").read_text())["config"]
    assert merge["base"] == str(run_dir / "rs" / "model")
    tracks = [str(run_dir / "rl" / "chat" / "model"), str(run_dir / "rl" / "logic")]
    assert [m["path"] for m in merge["models"]] == tracks
    calibrate = json.loads((run_dir / "calibrate" / "manifest.json").read_text())["config"]
    assert calibrate["model"] == str(run_dir / "merge")
    evaluated = json.loads((run_dir / "eval" / "results.json").read_text())
    assert [row["model"] for row in evaluated["rows"]] == ["base", "sft", "merged", "final"]
    assert evaluated["models"]["final"]["path"] == str(run_dir / "calibrate")
    assert "/models--tiny-org--llama3-json-tools/snapshots/" in evaluated["models"]["base"]["path"]  # resolved Hub id

    # The Hub model's own template and tool format went through every stage; the manifests name its commit.
    from posttrain.manifest import read_manifest

    midtrain = read_manifest(run_dir / "midtrain")
    assert midtrain["hub_models"][REPO]["commit"] == Path(midtrain["hub_models"][REPO]["path"]).name
    for stage in ("sft", "rl/logic"):
        chat = read_manifest(run_dir / stage)["metrics"]["chat"]
        assert chat["tool_format"] == "llama3_json" and chat["template"]["source"] == "model"
    assert read_manifest(run_dir / "sft")["metrics"]["chat"]["assistant_mask"]["method"] == "prefix_rendering"
    expected = render_tool_conversation(tiny_family("llama3"))
    for folder in ("sft", "merge", "calibrate"):
        assert render_tool_conversation(run_dir / folder) == expected, folder

    # Each stage's resolved config runs on its own with its own command's schema.
    alone = load_config(SFTStageConfig, run_dir / "pipeline" / "sft.yaml")
    assert alone.model_dump(mode="json") == sft

    # One record per stage: done, with a fingerprint and the hashes of what later stages read.
    for name in ("data", *STAGE_FOLDERS):
        record = json.loads((run_dir / "pipeline" / f"{name}.state.json").read_text())
        assert record["status"] == "done" and len(record["fingerprint"]) == 64
    # rs read the SFT folder and the two task datasets: its inputs are their content hashes.
    rs_record = json.loads((run_dir / "pipeline" / "rs.state.json").read_text())
    hashes = HashCache(tmp_path / "cache.json")
    assert rs_record["inputs"] == {"model": hashes.folder(run_dir / "sft"),
                                   "sample.tasks.dataset": hashes.folder(run_dir / "data" / "tasks"),
                                   "heldout.tasks.dataset": hashes.folder(run_dir / "data" / "heldout")}
    assert rs_record["outputs"]["rs"] == hashes.folder(run_dir / "rs" / "model")


def test_summary_and_plots(tiny_run) -> None:
    run_dir, summary = tiny_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    rows = {row["stage"]: row for row in on_disk["stages"]}
    gains = {g["metric"]: g for row in rows.values() for g in (row.get("metrics") or {}).get("gains", [])}
    sft_log = [json.loads(line) for line in (run_dir / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in sft_log if "loss" in r]
    assert rows["sft"]["metrics"]["gains"][0] == {"metric": "train loss", "before": losses[0], "after": losses[-1]}
    calibration = json.loads((run_dir / "calibrate" / "manifest.json").read_text())["metrics"]
    assert gains["ECE (held-out)"] == {"metric": "ECE (held-out)", "before": calibration["before"]["ece"],
                                       "after": calibration["after"]["ece"]}
    assert {"held-out pass@1", "held-out pairwise accuracy", "chat win rate vs start", "logic held-out reward"} <= set(
        gains)
    assert on_disk["eval"]["rows"][0]["model"] == "base"
    markdown = (run_dir / "summary.md").read_text()
    assert "| sft | ran |" in markdown and "## Evaluation" in markdown
    for name in ("loss_curves", "rs_pass_rates", "rl_tracks", "reliability", "eval"):
        png = run_dir / on_disk["plots"][name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"({on_disk['plots'][name]})" in markdown


def test_a_second_run_skips_every_stage_and_touches_nothing(tiny_run, hub_model) -> None:
    run_dir, first = tiny_run
    manifests = {p: p.stat().st_mtime_ns for p in run_dir.rglob("manifest.json")}
    again = run(run_dir, hub_model)
    assert statuses(again) == {s: "skipped" for s in ("data", *STAGE_FOLDERS)}
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("manifest.json")} == manifests
    assert [r["metrics"] for r in again["stages"]] == [r["metrics"] for r in first["stages"]]


POSTTRAIN = str(Path(sys.executable).with_name("posttrain"))  # the console script of this environment


def test_a_run_killed_during_sft_resumes_to_the_uninterrupted_weights(tiny_run, hub_model, tmp_path) -> None:
    """SIGKILL the pipeline once SFT has written its first checkpoint; the next run skips the finished stages, resumes
    SFT from that checkpoint and ends with the same weights as the uninterrupted run (the module's run)."""
    import os
    import signal
    import subprocess
    import time

    from safetensors.torch import load_file

    run_dir = tmp_path / "killed"
    args = [POSTTRAIN, "pipeline", "--config", str(TINY), f"run_dir={run_dir}",
            f"model={hub_model}", "--until", "sft"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    checkpoint = run_dir / "sft" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no SFT checkpoint within 10 minutes"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    record = json.loads((run_dir / "pipeline" / "sft.state.json").read_text())
    assert record["status"] == "running" and not (run_dir / "sft" / "manifest.json").exists()

    resumed = run(run_dir, hub_model, stop="sft")
    after = "not run (after --until)"
    assert statuses(resumed) == {"data": "skipped", "midtrain": "skipped", "sft": "ran", "rs": after, "rm": after,
                                 "rl": after, "merge": after, "calibrate": after, "eval": after}
    log = [json.loads(line) for line in (run_dir / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]  # steps 1-2 came from the checkpoint
    straight = load_file(tiny_run[0] / "sft" / "model.safetensors")
    again = load_file(run_dir / "sft" / "model.safetensors")
    assert straight.keys() == again.keys()
    assert all(torch_close(straight[k], again[k]) for k in straight)

    # A changed stage config re-runs that stage and the ones after it; the ones before are skipped.
    changed = run(run_dir, hub_model, "midtrain.train.learning_rate=0.002", stop="sft")
    assert statuses(changed)["data"] == "skipped"
    assert statuses(changed)["midtrain"] == statuses(changed)["sft"] == "ran"
    retrained = load_file(run_dir / "sft" / "model.safetensors")
    assert not all(torch_close(retrained[k], again[k]) for k in again)

    # --from/--until: the stages before --from are used as they are; an unchanged stage in range is skipped.
    ranged = run(run_dir, hub_model, "midtrain.train.learning_rate=0.002", start="sft", stop="sft")
    assert statuses(ranged)["data"] == statuses(ranged)["midtrain"] == "not run (before --from)"
    assert statuses(ranged)["sft"] == "skipped"
    from posttrain.errors import UserError

    with pytest.raises(UserError, match=r"--from: stage rs has not finished in .*killed"):
        run(run_dir, hub_model, start="rm")


def torch_close(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-6, rtol=1e-5))
