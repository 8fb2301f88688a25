"""What every stage checks before it writes or removes anything (`Stage.check` / `Stage.open`): the output folder
(not a file, not an input, nothing but this stage's own output) and the environment (trackers, rollout engines and
their `engine_kwargs`). Real stages on the tiny model, real files; vLLM's arguments read from the installed vLLM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_built_dataset

from posttrain.errors import UserError
from posttrain.manifest import write_manifest
from posttrain.rollout.config import RolloutConfig, engine_arguments
from posttrain.stages import stage
from posttrain.stages.preflight import MARK, output_stage
from posttrain.stages.sft import SFTStageConfig, run_sft


def chat_rows(n: int = 8) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{i} + 1?"}, {"role": "assistant", "content": f"{i + 1}"}],
             "tools": ""} for i in range(n)]


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    return write_built_dataset(tmp_path / "data", "chat", chat_rows())


def sft_config(model: Path, data: Path, out: Path, **train) -> SFTStageConfig:
    return SFTStageConfig(model=str(model), data=data, output_dir=out,
                          train={"max_steps": 1, "batch_size": 4, "report_to": [], **train})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ the output folder
def test_sft_refuses_an_output_folder_that_is_not_its_own_and_leaves_it_as_it_was(tiny_model_dir, chat_data,
                                                                                  tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    other = tmp_path / "rm_out"
    write_manifest(other, {"stage": "rm", "config": {}, "inputs": {}, "metrics": {}})
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    cases = [
        (chat_data, "is also an input of this command"),  # the dataset it reads
        (model, "is also an input of this command"),  # its own input model: it would retrain on every re-run
        (chat_data / "sub", "lies inside an input folder"),
        (other, "holds the output of the 'rm' stage"),
        (notes, "holds files that are not a posttrain output (todo.txt)"),
    ]
    for out, expected in cases:
        before = {p: snapshot(p) for p in (chat_data, model, other, notes)}
        with pytest.raises(UserError, match="output_dir") as refused:
            run_sft(sft_config(model, chat_data, out))
        assert expected in refused.value.message, (out, refused.value.message)
        assert {p: snapshot(p) for p in before} == before  # nothing was written, nothing removed
        assert not (chat_data / "sub").exists()

    # A built dataset given as the output of a stage that does not read it is "a built dataset", not an input.
    other_data = write_built_dataset(tmp_path / "other_data", "chat", chat_rows(4))
    with pytest.raises(UserError, match=r"holds a built dataset \(`posttrain data build`\)"):
        run_sft(sft_config(model, chat_data, other_data))
    # A plain model folder is named as one.
    with pytest.raises(UserError, match="holds a model folder"):
        stage("sft").check(sft_config(model, chat_data, tiny_model_dir))


def test_output_dir_that_is_a_file_is_exit_2_without_a_traceback(tiny_model_dir, chat_data, tmp_path):
    target = tmp_path / "taken"
    target.write_text("a file")
    for out in (target, target / "below"):
        done = subprocess.run([sys.executable, "-m", "posttrain.cli", "sft", f"model={tiny_model_dir}",
                               f"data={chat_data}", f"output_dir={out}", "train.report_to=[]"],
                              capture_output=True, text=True)
        said = " ".join(done.stderr.split())
        assert done.returncode == 2 and "Traceback" not in said, done.stderr
        assert f"output_dir {out}:" in said and "is a file" in said
    assert target.read_text() == "a file"


def test_an_earlier_or_killed_run_of_the_same_stage_may_be_written_again(tiny_model_dir, chat_data, tmp_path):
    out = tmp_path / "sft"
    run_sft(sft_config(tiny_model_dir, chat_data, out))
    assert output_stage(out) == "sft"
    run_sft(sft_config(tiny_model_dir, chat_data, out, learning_rate=1e-3))  # another config: trained again

    killed = tmp_path / "killed"  # what a run killed before its manifest leaves: the mark and its work folders
    stage("sft").open(sft_config(tiny_model_dir, chat_data, killed))
    (killed / "logs").mkdir()
    assert (killed / MARK).read_text().strip() == "sft" and output_stage(killed) == "sft"
    stage("sft").check(sft_config(tiny_model_dir, chat_data, killed))
    with pytest.raises(UserError, match="the output of the 'sft' stage"):  # and it is no other stage's
        stage("midtrain").check(stage("midtrain").schema(model=str(tiny_model_dir), data=chat_data,
                                                          output_dir=killed))


def test_a_folder_of_this_stages_outputs_and_an_explicit_overwrite_pass(tiny_model_dir, tmp_path):
    run_data = tmp_path / "run" / "data"  # the pipeline's data stage: RUN/data/<name>, each a data build
    write_built_dataset(run_data / "sft", "chat", chat_rows(2))
    write_built_dataset(run_data / "tasks", "chat", chat_rows(2))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("kind: chat\n")
    data = stage("data")
    data.check(data.schema(output_dir=run_data, datasets={"sft": {"recipe": recipe}}))
    (run_data / "stray.txt").write_text("x")
    with pytest.raises(UserError, match="stray.txt"):
        data.check(data.schema(output_dir=run_data, datasets={"sft": {"recipe": recipe}}))

    merge = stage("merge")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.bin").write_text("x")
    section = {"base": str(tiny_model_dir), "models": [{"path": str(tiny_model_dir)}], "output_dir": str(taken),
               "method": "linear"}
    with pytest.raises(UserError, match="not a posttrain output"):
        merge.check(merge.schema(**section))
    merge.open(merge.schema(**section, overwrite=True))  # the stage's own overwrite: true is the user's word
    assert not (taken / MARK).exists()  # a folder that holds something else is not marked as the merge's


# ---------------------------------------------------------------------------------------------- the environment
def test_engine_kwargs_are_checked_against_the_engines_arguments():
    RolloutConfig(engine="hf", engine_kwargs={"num_threads": 2, "batch_size": 4, "dtype": "float32"}).check()
    RolloutConfig(engine="vllm", engine_kwargs={"kv_cache_gib": 2, "enable_chunked_prefill": False,
                                                "max_num_batched_tokens": 4096, "tensor_parallel_size": 1}).check()
    cases = [("hf", {"num_thread": 2}, "rollout.engine_kwargs.num_thread: not an argument of the hf engine",
              "num_threads"),
             ("vllm", {"kv_cache_gb": 1}, "rollout.engine_kwargs.kv_cache_gb: not an argument of the vllm engine",
              "kv_cache_gib"),
             ("vllm", {"enable_chunked_prefil": False}, "enable_chunked_prefil", "enable_chunked_prefill"),
             ("hf", {"model": "x"}, "rollout.engine_kwargs.model: the engine loads the stage's model", "")]
    for engine, kwargs, expected, hint in cases:
        with pytest.raises(UserError) as bad:
            RolloutConfig(engine=engine, engine_kwargs=kwargs).check()
        assert expected in bad.value.message and hint in bad.value.message


def test_vllm_arguments_read_from_its_source_match_its_classes():
    """The source-reading shortcut (no 15 s vLLM import at every stage start) finds what importing vLLM finds."""
    code = ("import dataclasses, inspect, json; from vllm import LLM; from vllm.engine.arg_utils import EngineArgs; "
            "names = set(inspect.signature(LLM.__init__).parameters) - {'self', 'kwargs'}; "
            "print(json.dumps(sorted(names | {f.name for f in dataclasses.fields(EngineArgs)})))")
    imported = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                             check=True).stdout.splitlines()[-1]))
    read = set(engine_arguments("vllm"))
    assert imported <= read  # every real argument is accepted
    assert read - imported <= {"dtype", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization",
                               "kv_cache_gib", "enforce_eager", "num_threads", "seed"}  # VLLMEngine's own


def test_importing_the_rollout_config_loads_neither_torch_nor_vllm():
    code = "import sys, posttrain.rollout.config; print(sorted({'torch', 'vllm', 'ray'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_stage_refuses_an_engine_kwargs_typo_before_starting_any_worker(tiny_model_dir, tmp_path):
    tasks = write_built_dataset(tmp_path / "tasks", "task", [
        {"env": "math", "messages": [{"role": "user", "content": "1 + 1?"}], "tools": "",
         "task": json.dumps({"id": "t0", "env": "math", "messages": [{"role": "user", "content": "1 + 1?"}],
                             "answer": "2"})}])
    sample = stage("sample")
    cfg = sample.schema(model=str(tiny_model_dir), tasks={"dataset": str(tasks)}, output_dir=tmp_path / "out",
                        rollout={"engine": "hf", "engine_kwargs": {"num_thread": 1}})
    with pytest.raises(UserError, match=r"rollout.engine_kwargs.num_thread: .*did you mean num_threads"):
        sample.run(cfg)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not (tmp_path / "out").exists()


def test_an_uninstalled_tracker_is_refused_on_dry_run(monkeypatch, tiny_model_dir, chat_data, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"train.report_to: 'wandb' is not installed"):
        stage("sft").check(sft_config(tiny_model_dir, chat_data, tmp_path / "o", report_to=["wandb"]))
