"""The pipeline config: wiring of every stage's inputs, pass-through of disabled stages, ``@name`` references, the
pipeline-wide ``report_to``, and bad configs as UserErrors naming the file, the stage and the key. Nothing runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from posttrain.errors import UserError
from posttrain.pipeline import load_pipeline_config
from posttrain.pipeline.graph import plan
from posttrain.pipeline.runner import check_range

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pipeline_tiny.yaml"
KANANA2 = ROOT / "configs" / "kanana2.yaml"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def planned(tmp_path: Path, model: Path, *overrides: str, config: Path = TINY):
    cfg, source = load_pipeline_config(config, [f"run_dir={tmp_path / 'run'}", f"model={model}", *overrides])
    return plan(cfg, source)


def test_wiring_follows_the_stage_order(tiny_model_dir, tmp_path) -> None:
    p = planned(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    cfg = {s.name: s.config for s in p.stages}
    assert str(cfg["midtrain"].model) == str(tiny_model_dir) and cfg["midtrain"].data == run / "data" / "midtrain"
    assert cfg["sft"].model == str(run / "midtrain") and cfg["sft"].data == run / "data" / "sft"
    assert cfg["rs"].model == str(run / "sft") and cfg["rs"].sample.tasks.dataset == str(run / "data" / "tasks")
    assert cfg["rs"].sample.tasks.limit == 4  # a partial task section keeps its keys and gets the dataset
    assert cfg["rs"].heldout.tasks.dataset == str(run / "data" / "heldout")
    assert cfg["rm"].model == str(run / "rs" / "model") and cfg["rm"].data == run / "data" / "preference"
    assert cfg["rl"].model == str(run / "rs" / "model")
    assert cfg["rl"].chat["scorer"]["reward_model"] == str(run / "rm")
    assert cfg["rl"].chat["offline"]["data"] == str(run / "data" / "preference")
    assert cfg["rl"].logic["heldout"]["tasks"] == {"dataset": str(run / "data" / "heldout"), "limit": 4}
    assert cfg["merge"].base == str(run / "rs" / "model")
    assert [m.path for m in cfg["merge"].models] == [str(run / "rl" / "chat" / "model"), str(run / "rl" / "logic")]
    assert cfg["calibrate"].model == str(run / "merge") and cfg["calibrate"].generate.env == "math"
    assert cfg["eval"].models == {"base": str(tiny_model_dir), "sft": str(run / "sft"), "merged": str(run / "merge"),
                                  "final": str(run / "calibrate")}
    assert cfg["eval"].chat.reference == "sft" and cfg["eval"].chat.scorer.reward_model == str(run / "rm")
    # Eval's win rate only on prompts the Chat track held out (its eval_fraction and seed).
    assert cfg["eval"].chat.held_out_fraction == 0.2 and cfg["eval"].chat.split_seed == 0
    # The pipeline's report_to reaches every training section, also sections left at their defaults.
    assert cfg["sft"].train.report_to == [] and cfg["rs"].sft.train.report_to == []
    assert cfg["rl"].chat["offline"]["train"]["report_to"] == [] and cfg["rl"].logic["train"]["report_to"] == []


def test_disabled_stages_pass_their_input_through(tiny_model_dir, tmp_path) -> None:
    p = planned(tmp_path, tiny_model_dir, "midtrain.enabled=false", "rs.enabled=false", "calibrate=null",
                "merge.enabled=false", "eval.models=null")
    run = tmp_path / "run"
    cfg = {s.name: s.config for s in p.stages}
    assert cfg["midtrain"] is None and cfg["rs"] is None and cfg["calibrate"] is None and cfg["merge"] is None
    assert cfg["sft"].model == str(tiny_model_dir)  # midtrain off: SFT starts from the base model
    assert cfg["rl"].model == str(run / "sft")  # rs off: RL starts from the SFT model
    # merge off: its first input (the Chat track) goes on; calibrate absent: the same model is final.
    assert p.products["merge"] == p.products["calibrate"] == str(run / "rl" / "chat" / "model")
    # eval compares the models this run makes (by default all of them; a stage that is off makes none).
    assert list(cfg["eval"].models) == ["base", "sft", "chat", "logic"]
    with pytest.raises(UserError, match=r"eval: models: merged: not a model of this run; expected names among base, "
                       r"midtrain, sft, rs, chat, logic, final"):
        planned(tmp_path, tiny_model_dir, "merge.enabled=false", "eval.models=[sft, merged]")


def test_references_and_explicit_inputs(tiny_model_dir, tmp_path) -> None:
    p = planned(tmp_path, tiny_model_dir, "eval.models={start: '@base', tuned: '@sft', chat: '@rl.chat'}",
                "rm.data=@data.sft", f"sft.data={tmp_path / 'mine'}")
    cfg = {s.name: s.config for s in p.stages}
    run = tmp_path / "run"
    assert cfg["eval"].models == {"start": str(tiny_model_dir), "tuned": str(run / "sft"),
                                  "chat": str(run / "rl" / "chat" / "model")}
    assert cfg["rm"].data == run / "data" / "sft" and cfg["sft"].data == tmp_path / "mine"
    assert cfg["eval"].chat.reference == "start"  # no `sft` among the models: the first one


@pytest.mark.parametrize(("overrides", "message"), [
    (["colour=red"], r"pipeline_tiny\.yaml \(with overrides\): colour: unknown key; expected one of: .*calibrate"),
    (["sft.train.learnin_rate=1"], r"pipeline_tiny\.yaml \(with overrides\): sft: train\.learnin_rate: unknown key"),
    (["rs.rounds=0"], r": rs: rounds: input should be greater than or equal to 1"),
    (["sft=3"], r": sft: expected a section .*got int"),
    (["sft.enabled=maybe"], r": sft: enabled: input should be a valid boolean"),
    (["eval.models={a: '@nope'}"], r": eval: models\.a: @nope: no such output before this stage; expected one of "
                                   r"@base, @data\.midtrain"),
    (["rm.data=@merge"], r": rm: data: @merge: no such output before this stage"),
    (["eval.models=[base, wizard]"], r": eval: models: wizard: not a model of this run"),
    (["rm.enabled=false", "rl.chat.scorer={kind: reward_model}"],
     r": rl: chat\.scorer\.reward_model: not set and the rm stage is not enabled"),
    (["rm.enabled=false"], r": rl: chat: \(top level\): value error, scorer: required"),
    (["rl.enabled=false"], r": merge: models: not set and the rl stage is not enabled"),
    (["data.datasets={sft: {recipe: data_recipes/sft_tiny.yaml}}"],
     r": midtrain: data: not set, and the data stage builds no dataset named 'midtrain'"),
    (["rl.ray_task={num_cpus: 1}"], r": rl: ray_task: the RL tracks already run as Ray tasks"),
    (["rl.logic.train.num_generations=1"], r": rl: logic: train\.num_generations: input should be greater"),
    (["merge.method=average"], r": merge: method: input should be 'linear', 'task_arithmetic' or 'ties'"),
    # What validation cannot see, checked by each stage's pre-flight while planning (nothing has run yet).
    (["rl.logic.rollout={engine: hf, engine_kwargs: {num_thread: 1}}"],
     r": rl: logic: rollout\.engine_kwargs\.num_thread: not an argument of the hf engine"),
    (["eval.output_dir=data_recipes"], r": eval: output_dir data_recipes: holds files that are not a posttrain output"),
    (["sft.output_dir=configs/pipeline_tiny.yaml"], r": sft: output_dir configs/pipeline_tiny\.yaml: is a file"),
])
def test_bad_configs_name_the_file_stage_and_key(overrides, message, tiny_model_dir, tmp_path) -> None:
    with pytest.raises(UserError, match=message):
        planned(tmp_path, tiny_model_dir, *overrides)


def test_stage_range_errors() -> None:
    with pytest.raises(UserError, match=r"--from nowhere: no such stage; expected one of data, midtrain"):
        check_range("nowhere", None)
    with pytest.raises(UserError, match=r"--from sft comes after --until midtrain"):
        check_range("sft", "midtrain")
    check_range("sft", "sft")


def test_shipped_kanana2_recipe_plans(tmp_path) -> None:
    p = planned(tmp_path, Path("smollm2-135m-instruct"), config=KANANA2)
    assert [s.name for s in p.stages if s.enabled] == ["data", "midtrain", "sft", "rs", "rm", "rl", "merge",
                                                       "calibrate", "eval"]
    assert p.stage("eval").config.models["base"] == "smollm2-135m-instruct"


def test_cli_dry_run_and_errors(tiny_model_dir, tmp_path, monkeypatch, capsys) -> None:
    import posttrain.cli.pipeline  # noqa: F401  registers `pipeline`
    from posttrain.cli import main

    def cli(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["posttrain", "pipeline", *args])
        try:
            main()
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    assert cli("--config", str(TINY), f"run_dir={tmp_path / 'run'}", f"model={tiny_model_dir}", "--dry-run") == 0
    out = capsys.readouterr().out
    sections = yaml.safe_load_all(out.replace("\n# ", "\n---\n# "))
    resolved = {k: v for doc in sections if doc for k, v in doc.items()}
    assert resolved["sft"]["model"] == str(tmp_path / "run" / "midtrain") and resolved["sft"]["train"]["max_steps"] == 6
    assert not (tmp_path / "run").exists()  # a dry run writes nothing

    def err() -> str:
        return " ".join(capsys.readouterr().err.split())  # the console wraps long lines

    assert cli("--config", str(TINY), "sft.train.batch_size=0", "--dry-run") == 2
    assert "sft: train.batch_size: input should be greater than 0" in err()
    assert cli("--config", str(TINY), "--until", "nowhere") == 2
    assert "--until nowhere: no such stage" in err()
    assert cli("--config", str(tmp_path / "missing.yaml")) == 2
    assert "missing.yaml: file not found" in err()


def test_chat_template_and_tool_format_reach_every_stage(tiny_model_dir, tmp_path) -> None:
    """The pipeline-wide chat_template and tool_format fill every section that has the keys (the RL tracks too); a
    section's own value wins; a bad tool format names the key."""
    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    p = planned(tmp_path, tiny_model_dir, f"chat_template={template}", "tool_format=json",
                "eval.tool_format=hermes")
    cfg = {s.name: s.config for s in p.stages}
    for stage in ("midtrain", "sft", "rs", "rm", "calibrate"):
        assert cfg[stage].chat_template == str(template), stage
    assert cfg["sft"].tool_format == "json" and cfg["rs"].tool_format == "json"
    assert cfg["rl"].chat["chat_template"] == str(template) and cfg["rl"].logic["tool_format"] == "json"
    assert cfg["eval"].tool_format == "hermes" and cfg["eval"].chat_template == str(template)
    with pytest.raises(UserError, match=r"tool_format"):
        planned(tmp_path, tiny_model_dir, "tool_format=xml")
