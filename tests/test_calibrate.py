"""The calibrate stage end to end on a tiny model, real engines, the real math verifier and a real TRL/transformers
trainer.

The tiny random model is first taught (a few optimizer steps, below) to answer every question with ``4``, so
on questions whose sum is 4 it is right and elsewhere wrong: real verified labels of both kinds from a model that
costs nothing to run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from posttrain.calibration.elicit import ElicitConfig, p_yes_logits, sigmoid, yes_no_tokens
from posttrain.config import load_config, validate
from posttrain.errors import UserError
from posttrain.manifest import file_sha256
from posttrain.stages.calibrate import CalibrateConfig, run_calibrate

ANSWER = "4"


def _question(a: int, b: int) -> str:
    return f"What is {a} + {b}?\n\nGive a short solution and put your final answer in \\boxed{{}}."


@pytest.fixture(scope="module")
def always4_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model after 60 steps of teaching it to answer ``4`` to anything (greedy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rng = random.Random(0)
    prompts = [tok.apply_chat_template([{"role": "user", "content": _question(rng.randint(0, 9), rng.randint(0, 9))}],
                                       tokenize=False, add_generation_prompt=True) for _ in range(64)]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        batch = rng.sample(prompts, 16)
        rows = [tok(p + ANSWER + "<|im_end|>", add_special_tokens=False).input_ids for p in batch]
        starts = [len(tok(p, add_special_tokens=False).input_ids) for p in batch]
        width = max(map(len, rows))
        ids = torch.full((16, width), tok.pad_token_id)
        labels = torch.full((16, width), -100)
        mask = torch.zeros((16, width), dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
            labels[i, start:len(row)] = torch.tensor(row[start:])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = tmp_path_factory.mktemp("models") / "always4"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tasks_dir(built_dataset_writer, tmp_path_factory) -> Path:
    """24 math tasks, a third of them with the answer 4."""
    rng = random.Random(1)
    rows = []
    for i in range(24):
        a = rng.randint(0, 4)
        b = 4 - a if i % 3 == 0 else rng.randint(5, 9)
        task = {"id": f"sum-{i}", "env": "math", "messages": [{"role": "user", "content": _question(a, b)}],
                "tools": [], "answer": str(a + b)}
        rows.append({"env": "math", "messages": task["messages"], "tools": "", "task": json.dumps(task)})
    return built_dataset_writer(tmp_path_factory.mktemp("data") / "tasks", "task", rows)


def _config(model: Path, tasks: Path, out: Path, **overrides) -> CalibrateConfig:
    data = {"model": str(model), "output_dir": str(out), "tasks": {"dataset": str(tasks)}, "eval_fraction": 0.5,
            "sampling": {"train": {"n": 2, "max_tokens": 8}, "eval": {"max_tokens": 8}},
            "rollout": {"engine": "hf"}, "verify": {"workers": 1}, "tuning": {"batch_size": 8}}
    for key, value in overrides.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return CalibrateConfig.model_validate(data)


@pytest.fixture()
def engine(always4_dir):
    from posttrain.rollout.hf_engine import HFEngine

    eng = HFEngine(always4_dir, dtype="float32", seed=0)
    yield eng
    eng.close()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_taught_model_answers_4_and_is_right_on_a_third(engine, tasks_dir) -> None:
    from posttrain.data import load_built
    from posttrain.rollout.sampling import SamplingParams

    ds = load_built(tasks_dir)
    prompts = [engine.tokenizer.apply_chat_template(m, add_generation_prompt=True) for m in ds["messages"][:3]]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    samples = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8))
    assert [s[0].text for s in samples] == [ANSWER] * 3


def test_temperature_end_to_end(engine, always4_dir, tasks_dir, tmp_path) -> None:
    from posttrain.calibration.report import calibration_report
    from posttrain.calibration.temperature import apply_temperature

    out = tmp_path / "out"
    cfg = _config(always4_dir, tasks_dir, out, method="temperature")
    logs: list[dict] = []
    manifest = run_calibrate(cfg, progress=logs.append, generator=engine).manifest

    assert manifest["status"] == "calibrated"
    m = manifest["metrics"]
    temperature = m["temperature_fit"]["temperature"]
    assert temperature > 0 and m["fit_answers"] == 12
    assert m["before"]["accuracy"] == m["after"]["accuracy"] == pytest.approx(4 / 12)  # the answers do not change
    # The report's "after" is the eval split's p_yes logits rescaled by the temperature fitted on the fit split.
    rows = _jsonl(out / "report" / "answers_eval.jsonl")
    fit_rows = _jsonl(out / "report" / "answers_fit.jsonl")
    assert len(rows) == 12 and not {r["id"] for r in rows} & {r["id"] for r in fit_rows}
    before = np.array([r["confidence_before"] for r in rows])
    after = np.array([r["confidence_after"] for r in rows])
    logits = np.log(before) - np.log1p(-before)
    np.testing.assert_allclose(after, apply_temperature(logits, temperature, from_logits=True), atol=1e-9)
    correct = [r["passed"] for r in rows]
    assert calibration_report(after, correct).ece == pytest.approx(m["after"]["ece"])
    assert [r["answer"] for r in rows] == [ANSWER] * 12

    # Report files, and the temperature saved with the model for later consumers.
    for name in ("report.json", "report.md", "reliability.png", "risk_coverage.png"):
        assert (out / "report" / name).stat().st_size > 0
    assert "| ECE (15 bins) ↓ |" in (out / "report" / "report.md").read_text()
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(temperature) and saved["scores_are_logits"] is True
    assert json.loads((out / "config.json").read_text())["posttrain_calibration"] == saved
    assert "posttrain_calibration" not in json.loads((always4_dir / "config.json").read_text())  # input untouched
    assert file_sha256(out / "model.safetensors") == file_sha256(always4_dir / "model.safetensors")

    # Same config and inputs: nothing to do.
    logs.clear()
    assert run_calibrate(cfg, progress=logs.append, generator=engine).manifest == manifest
    assert any("nothing to do" in event["message"] for event in logs)


def test_guard_fails_through_the_cli_and_keeps_the_input_model(always4_dir, tasks_dir, tmp_path) -> None:
    """A tolerance of -1 demands an accuracy gain of 1: the stage fails (exit 1) and leaves the input model."""
    import yaml
    from typer.testing import CliRunner

    from posttrain.cli import app

    out = tmp_path / "out"
    config = tmp_path / "calibrate.yaml"
    config.write_text(yaml.safe_dump(_config(always4_dir, tasks_dir, out, method="temperature")
                                     .model_dump(mode="json")))
    result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "guard.max_accuracy_drop=-1",
                                      "rollout.resources.num_cpus=0.5"])
    assert result.exit_code == 1, result.output
    assert "accuracy guard FAILED" in result.output and "INPUT model kept" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "guard_failed" and manifest["output_model"].startswith("INPUT model kept")
    assert manifest["metrics"]["guard"]["passed"] is False
    assert file_sha256(out / "model.safetensors") == file_sha256(always4_dir / "model.safetensors")
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["calibrated"] is False and saved["temperature"] == 1.0
    assert (out / "report" / "report.md").is_file()


def _graded_examples(n: int = 32):
    """Conversations ending in the answer 4, labelled by the real math verifier (1 in 8 is right)."""
    from envs.math import MathEnv
    from posttrain.calibration.tuning import Example
    from posttrain.environment import Trajectory

    rng = random.Random(0)
    env = MathEnv()
    try:
        examples = []
        for i in range(n):
            a = rng.randint(0, 4)
            b = 4 - a if i % 8 == 0 else rng.randint(5, 9)
            task = {"id": str(i), "messages": [{"role": "user", "content": _question(a, b)}], "answer": str(a + b)}
            messages = [*task["messages"], {"role": "assistant", "content": ANSWER}]
            examples.append(Example(messages, env.verify(Trajectory(task, messages)).passed))
    finally:
        env.close()
    return examples


def test_tuning_moves_p_yes_toward_the_labels_and_keeps_the_answers(always4_dir, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.calibration.tuning import TuningSettings, make_trainer
    from posttrain.training.settings import LoraSettings

    tok = AutoTokenizer.from_pretrained(always4_dir)
    model = AutoModelForCausalLM.from_pretrained(always4_dir)
    examples = _graded_examples()
    y = np.array([e.correct for e in examples], dtype=float)
    assert y.sum() == 4
    cfg = ElicitConfig()
    tokens = yes_no_tokens(tok, cfg.yes_words, cfg.no_words)

    def bce(m) -> float:
        p = sigmoid(p_yes_logits(m, tok, [e.messages for e in examples], config=cfg, tokens=tokens))
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    start = bce(model)
    settings = TuningSettings(max_steps=16, learning_rate=1e-2, batch_size=8, kl_coef=1.0)
    trainer, counts = make_trainer(model, tok, examples, tokens, cfg.query, settings,
                                   LoraSettings(r=8, alpha=16, dropout=0.0), tmp_path / "work")
    assert counts == {"examples": 32, "correct": 4, "too_long": 0}
    trainer.train()
    end = bce(trainer.model)
    assert end < start - 0.05, (start, end)
    logged = [row for row in trainer.state.log_history if "bce" in row]
    assert logged and all(row["kl"] >= 0 for row in logged)

    # The KL term kept the answer: the merged model still answers 4.
    merged = trainer.model.merge_and_unload().eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": _question(1, 7)}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    new = merged.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:]
    assert tok.decode(new, skip_special_tokens=True) == ANSWER


def test_tuning_end_to_end_merged(engine, always4_dir, tasks_dir, tmp_path) -> None:
    out = tmp_path / "out"
    cfg = _config(always4_dir, tasks_dir, out, method="tuning", tuning__max_steps=4, tuning__learning_rate=1e-2,
                  tuning__output="merged")
    manifest = run_calibrate(cfg, generator=engine).manifest
    assert manifest["status"] == "calibrated" and manifest["output_model"] == "calibrated model"
    m = manifest["metrics"]
    assert m["training"]["steps"] == 4 and m["training"]["examples"] == m["train_answers"] == 24
    assert m["after"]["accuracy"] >= m["before"]["accuracy"] - 0.02
    # The output folder holds the merged, tuned model (new weights) with its settings, and nothing left over.
    assert file_sha256(out / "model.safetensors") != file_sha256(always4_dir / "model.safetensors")
    assert not (out / "candidate").exists() and not (out / "work").exists()
    assert not (out / "confidence_adapter").exists()
    assert json.loads((out / "config.json").read_text())["posttrain_calibration"]["method"] == "tuning"
    assert len(_jsonl(out / "report" / "answers_train.jsonl")) == 24
    assert len(_jsonl(out / "report" / "answers_eval_after.jsonl")) == 12
    assert (out / "report" / "reliability.png").is_file()


def test_tuning_end_to_end_adapter_keeps_the_answers(engine, always4_dir, tasks_dir, tmp_path) -> None:
    """The default output: the input weights answer (so accuracy cannot move) and a LoRA reads the confidence."""
    from transformers import AutoTokenizer

    from posttrain.calibration.elicit import load_confidence_model

    out = tmp_path / "out"
    cfg = _config(always4_dir, tasks_dir, out, method="tuning", tuning__max_steps=4, tuning__learning_rate=1e-2)
    manifest = run_calibrate(cfg, generator=engine).manifest
    assert manifest["status"] == "calibrated" and "confidence adapter" in manifest["output_model"]
    m = manifest["metrics"]
    assert m["after"]["accuracy"] == m["before"]["accuracy"] and m["output"] == "adapter"
    assert file_sha256(out / "model.safetensors") == file_sha256(always4_dir / "model.safetensors")
    assert (out / "confidence_adapter" / "adapter_config.json").is_file()
    assert any(k.startswith("confidence_adapter/") for k in manifest["outputs"])
    assert not (out / "candidate_adapter").exists() and not (out / "work").exists()
    saved = json.loads((out / "config.json").read_text())["posttrain_calibration"]
    assert saved["confidence_adapter"] == "confidence_adapter"

    # One answer list, two confidences; the adapter moved them, and reloading the folder reads the same numbers.
    rows = _jsonl(out / "report" / "answers_eval.jsonl")
    assert len(rows) == 12
    before = np.array([r["confidence_before"] for r in rows])
    after = np.array([r["confidence_after"] for r in rows])
    assert np.abs(after - before).max() > 1e-3
    questions = {json.loads(t)["id"]: json.loads(t)["messages"] for t in _task_records(tasks_dir)}
    conversations = [[*questions[r["task_id"]], {"role": "assistant", "content": r["answer"]}] for r in rows]
    tok = AutoTokenizer.from_pretrained(out)
    elicit_cfg = ElicitConfig()
    reread = sigmoid(p_yes_logits(load_confidence_model(out), tok, conversations, config=elicit_cfg,
                                  tokens=yes_no_tokens(tok, elicit_cfg.yes_words, elicit_cfg.no_words)))
    np.testing.assert_allclose(reread, after, atol=1e-4)


def _task_records(tasks_dir: Path) -> list[str]:
    from posttrain.data import load_built

    return load_built(tasks_dir)["task"]


def test_every_elicitation_on_graded_answers(engine, always4_dir, tasks_dir) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.calibration.answers import sample_and_grade
    from posttrain.calibration.confidence import elicit
    from posttrain.calibration.elicit import sequence_likelihood
    from posttrain.rollout.agent_loop import AgentLoopConfig
    from posttrain.rollout.sampling import SamplingParams
    from posttrain.tasks import TasksConfig, load_tasks
    from posttrain.verify_pool import VerifyPool

    rows, _ = load_tasks(TasksConfig(dataset=str(tasks_dir), limit=6), tasks_dir / "unused")
    tok = AutoTokenizer.from_pretrained(always4_dir)
    model = AutoModelForCausalLM.from_pretrained(always4_dir)
    with VerifyPool("math", workers=1) as verifier:
        answers = sample_and_grade(engine, rows, [SamplingParams(temperature=0.0, max_tokens=8)] * 6,
                                   {"math": verifier}, agent=AgentLoopConfig(max_turns=1), env_kwargs={},
                                   instruction="Say <confidence>0.9</confidence>.")
    assert [a.passed for a in answers] == [r.task["answer"] == "4" for r in rows]
    assert all(a.messages[0]["content"].endswith("Say <confidence>0.9</confidence>.") for a in answers)
    tokens = yes_no_tokens(tok, ElicitConfig().yes_words, ElicitConfig().no_words)
    for method in ("p_yes", "verbalized", "likelihood"):
        cfg = ElicitConfig(method=method, verbalized_fallback=0.25)
        scores = elicit(answers, cfg, model, tok, tokens)
        assert scores.confidences.shape == (6,) and np.all((scores.confidences >= 0) & (scores.confidences <= 1))
        if method == "p_yes":
            expected = sigmoid(p_yes_logits(model, tok, [a.messages for a in answers], tokens=tokens))
        elif method == "verbalized":  # the tiny model never writes the tag: every answer falls back, counted
            expected = np.full(6, 0.25)
            assert scores.stats["unparseable"] == 6 and scores.stats["parsed"] == 0
        else:
            expected = np.array([sequence_likelihood(a.logprobs) for a in answers])
        np.testing.assert_allclose(scores.confidences, expected, atol=1e-9)


def test_rlcr_end_to_end(engine, always4_dir, tasks_dir, tmp_path) -> None:
    from posttrain.manifest import file_sha256
    from posttrain.stages.calibrate import run_calibrate

    out = tmp_path / "out"
    cfg = _config(always4_dir, tasks_dir, out, method="rlcr", elicitation={"method": "verbalized"},
                  rlcr={"train": {"max_steps": 2, "prompts_per_step": 2, "num_generations": 2, "learning_rate": 1e-3,
                                  "report_to": [], "save_steps": 100},
                        "sampling": {"max_tokens": 8}})
    manifest = run_calibrate(cfg, generator=engine).manifest
    m = manifest["metrics"]
    assert m["training"]["steps"] == 2
    # The tiny model never writes the tag: every confidence is the fallback, and the report counts it.
    assert m["elicitation_before"]["unparseable"] == m["elicitation_before"]["answers"] == 12
    logged = [json.loads(line) for line in (out / "report" / "rlcr_metrics.jsonl").read_text().splitlines()]
    assert any("rewards/rlcr/mean" in row for row in logged)
    assert manifest["status"] in ("calibrated", "guard_failed")
    if manifest["status"] == "calibrated":
        assert file_sha256(out / "model.safetensors") != file_sha256(always4_dir / "model.safetensors")
    assert json.loads((out / "calibration.json").read_text())["method"] == "rlcr"
    assert not (out / "candidate").exists() and (out / "report" / "reliability.png").is_file()


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=tuning", "elicitation.method=verbalized"], "method: tuning trains the p_yes confidence"),
    (["method=rlcr"], "method: rlcr trains the verbalized confidence"),
    (["method=isotonic"], "method: input should be 'tuning', 'rlcr' or 'temperature'"),
    (["eval_fraction=1.5"], "eval_fraction: input should be less than 1"),
    (["elicitation.verbalized_fallback=2"], "elicitation.verbalized_fallback"),
    (["sampling.eval.seed=3"], "sampling.eval.seed: per-row seeds derive from the top-level `seed` key"),
    (["tuning.kl_coef=-1"], "tuning.kl_coef"),
    (["guard.tolerance=0.1"], "guard.tolerance: unknown key; expected one of: max_accuracy_drop"),
    (["generate.env=math", "generate.n=10"], "set exactly one of tasks"),
])
def test_bad_configs_are_user_errors(overrides, message, tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: m\noutput_dir: out\ntasks: {dataset: d}\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(CalibrateConfig, config, overrides)


def test_tasks_from_an_environment_generator(tmp_path) -> None:
    from envs.math.tasks import generate_tasks
    from posttrain.stages.calibrate import load_rows

    cfg = CalibrateConfig.model_validate({"model": "m", "output_dir": str(tmp_path), "method": "temperature",
                                          "generate": {"env": "math", "n": 10, "seed": 3}})
    rows, inputs = load_rows(cfg, tmp_path)
    assert [r.id for r in rows] == [t["id"] for t in generate_tasks(10, 3)]
    assert {(r.env, r.bucket) for r in rows} == {("math", "math")}
    assert list(inputs) == ["tasks:generated:math:seed=3:n=10"]
    assert load_rows(cfg, tmp_path)[1] == inputs  # deterministic, so a re-run is recognised as the same input
    with pytest.raises(UserError, match="set exactly one of tasks"):
        validate(CalibrateConfig, {"model": "m", "output_dir": "o"}, "c.yaml")


def test_bad_inputs_fail_before_any_worker_starts(always4_dir, tasks_dir, tmp_path, built_dataset_writer) -> None:
    with pytest.raises(UserError, match="elicitation.yes_words: none of"):
        run_calibrate(_config(always4_dir, tasks_dir, tmp_path / "a", elicitation__yes_words=["yes sir"]))
    with pytest.raises(UserError, match="eval_fraction=0.99 of 24 task rows leaves no rows"):
        run_calibrate(_config(always4_dir, tasks_dir, tmp_path / "b", eval_fraction=0.99))
    chat = built_dataset_writer(tmp_path / "chat", "chat", [{"messages": [{"role": "user", "content": "hi"}],
                                                             "tools": ""}])
    with pytest.raises(UserError, match="needs prompts from a recipe of kind 'task'"):
        run_calibrate(_config(always4_dir, chat, tmp_path / "c"))
    with pytest.raises(UserError, match="output_dir .*: is also an input of this command"):  # the shared check
        run_calibrate(_config(always4_dir, tasks_dir, always4_dir))
    with pytest.raises(UserError, match="model folder 'nope' not found"):
        run_calibrate(_config(Path("nope"), tasks_dir, tmp_path / "d"))


def test_dry_run_prints_the_resolved_config(tmp_path) -> None:
    from typer.testing import CliRunner

    from posttrain.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("model: m\noutput_dir: out\ntasks: {dataset: d}\n")
    result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "--dry-run", "method=temperature"])
    assert result.exit_code == 0, result.output
    assert "method: temperature" in result.output and "max_accuracy_drop: 0.02" in result.output
