"""``posttrain calibrate``: make the model's confidence match its accuracy, and prove it on held-out tasks.

The recipe, top to bottom:

1. inputs: the model and the task rows (a task recipe, a built task dataset or an environment's generator); the same
   config and inputs as a finished run -> nothing to do. The rows are split once, by a seeded shuffle, into a
   held-out **eval** split (never trained or fitted on) and a **fit** split the method learns from;
2. workers: the rollout pool (or an engine) that writes answers, one verifier pool per environment, and the model in
   this process that reads confidences;
3. before: the model answers the eval split (``sampling.eval``, greedy by default), the verifiers grade the answers,
   and the chosen elicitation reads a confidence for each;
4. the method:
   - ``temperature``: answers on the fit split as on the eval split; one temperature fitted on them; the model is
     unchanged and the temperature is saved with it;
   - ``tuning``: ``sampling.train`` answers (several per row) on the fit split, graded; a LoRA adapter trained to
     predict the grade through p_yes with a KL penalty that keeps the answers (``posttrain.calibration.tuning``);
     merged and saved as the candidate;
   - ``rlcr``: the Logic track's GRPO on the fit split, rewarded by ``correct - (confidence - correct)^2`` on the
     verbalized confidence (``posttrain.calibration.rlcr``);
5. after: the candidate answers the eval split again (for ``temperature`` the answers are the same) and its
   confidences are read the same way;
6. report and guard: before/after metrics, plots, JSON and markdown under ``output_dir/report``. If accuracy fell by
   more than ``guard.max_accuracy_drop`` the stage fails and ``output_dir`` holds the *input* model (weights
   hard-linked or copied), as the manifest and the printed summary say; otherwise the calibrated model. Either way
   the calibration settings (elicitation, temperature) are saved with the output model (:func:`load_calibration`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from posttrain.calibration.answers import GradedAnswer, sample_and_grade, write_answers
from posttrain.calibration.confidence import Reader, Scores
from posttrain.calibration.elicit import (
    ElicitConfig,
    yes_no_tokens,
)
from posttrain.calibration.tuning import TuningSettings
from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.manifest import METRICS_FILE, finished_run, model_sha256, start_fresh
from posttrain.models.chat import describe, load_chat
from posttrain.models.loading import resolve_model
from posttrain.models.settings import ChatSettings
from posttrain.report import Progress, as_progress
from posttrain.rl.config import RLTrain
from posttrain.rollout.agent_loop import AgentLoopConfig
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig
from posttrain.stages.contract import Stage, StageResult, Wiring, gain, manifest_metrics, output_folder
from posttrain.tasks import TaskRow, TasksConfig, Verifiers, VerifySettings, row_seed
from posttrain.training.model import load_model
from posttrain.training.settings import LoraSettings

NAME = "calibrate"
Method = Literal["tuning", "rlcr", "temperature"]


class AnswerSampling(Schema):
    """How answers are drawn: ``train`` for the answers the tuning methods learn from (several per row, sampled, so
    that right and wrong answers both occur), ``eval`` for the eval split and the temperature fit (as deployed)."""

    train: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=4, temperature=1.0, max_tokens=256))
    eval: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=256))


class GeneratedTasks(Schema):
    """Tasks drawn from an environment's own seeded generator (``posttrain envs generate``, without the files)."""

    env: str = Field(description="environment name, module or path (e.g. math)")
    n: int = Field(ge=2, description="how many tasks; eval_fraction of them are held out")
    seed: int = 0


class RLCRSettings(Schema):
    """The ``rlcr`` section: the Logic track's optimisation and sampling (its ``train`` and ``sampling`` sections)."""

    train: RLTrain = Field(default_factory=lambda: RLTrain(max_steps=20, prompts_per_step=4, num_generations=4,
                                                           learning_rate=1e-6, report_to=[]))
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=1.0, max_tokens=256))


class GuardSettings(Schema):
    max_accuracy_drop: float = Field(0.02, ge=-1.0, le=1.0, description="fail (keep the input model) when held-out "
                                     "accuracy falls by more than this; a negative value demands a gain")


class CalibrateConfig(ChatSettings):
    """``posttrain calibrate`` config."""

    model: str = Field(description="HF model folder, Hub id or known name (e.g. smollm2-135m-instruct)")
    output_dir: Path
    method: Method = "tuning"
    tasks: TasksConfig | None = Field(None, description="a task recipe or a built task dataset ...")
    generate: GeneratedTasks | None = Field(None, description="... or tasks from an environment's generator")
    eval_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="share of the rows held out for the report")
    elicitation: ElicitConfig = Field(default_factory=ElicitConfig)
    sampling: AnswerSampling = Field(default_factory=AnswerSampling)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    local_engine: bool = Field(False, description="run one rollout.engine in this process (engine_kwargs apply) "
                               "instead of Ray workers: less memory and start-up for small CPU runs")
    agent: AgentLoopConfig = Field(default_factory=lambda: AgentLoopConfig(max_turns=1))
    envs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="constructor kwargs per environment")
    verify: VerifySettings = Field(default_factory=VerifySettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=8, alpha=16.0, dropout=0.0))
    rlcr: RLCRSettings = Field(default_factory=RLCRSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    seed: int = Field(0, description="the split and the per-row sampling seeds derive from it")

    @model_validator(mode="after")
    def _consistent(self) -> CalibrateConfig:
        if (self.tasks is None) == (self.generate is None):
            raise ValueError("set exactly one of tasks (a task recipe or built dataset) or generate (env, n, seed)")
        needs = {"tuning": "p_yes", "rlcr": "verbalized"}.get(self.method)
        if needs and self.elicitation.method != needs:
            raise ValueError(f"method: {self.method} trains the {needs} confidence; set elicitation.method: {needs} "
                             f"(got {self.elicitation.method}); temperature scaling works with any elicitation")
        for name in ("train", "eval"):
            if getattr(self.sampling, name).seed is not None:
                raise ValueError(f"sampling.{name}.seed: per-row seeds derive from the top-level `seed` key")
        return self


@dataclass
class Calibration:
    """One run of the stage, as its steps share it: the inputs read once, the running workers, the model confidences
    are read from, the split, and the input model's graded answers on the eval split with their confidences."""

    cfg: CalibrateConfig
    out: Path
    model_dir: Path
    inputs: dict[str, str]
    report: Progress
    workers: Workers
    reader: Reader
    fit_rows: list[TaskRow]
    eval_rows: list[TaskRow]
    before: list[GradedAnswer]
    before_scores: Scores
    started: float


def run_calibrate(cfg: CalibrateConfig, source: str = "config", progress: Progress | None = None, *,
                  generator: Any = None) -> StageResult:
    """Run the stage; the manifest's ``status`` is ``calibrated`` or ``guard_failed`` (then the result is not ok:
    the output folder holds the input model and the command exits 1). ``generator``: running rollout workers or an
    engine holding ``cfg.model``'s weights (they end up holding the output model's); by default a pool is started
    from ``cfg.rollout`` and shut down at the end."""
    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; trackers and engines exist
    started = time.perf_counter()

    # 1. Inputs, and the split: eval rows never reach training or fitting.
    model_dir = resolve_model(cfg.model, key=f"{source}: model")
    if out.resolve() == model_dir.resolve():
        raise UserError(f"{source}: output_dir: {out} is the input model's folder; write the result elsewhere")
    rows, inputs = load_rows(cfg, out)
    inputs[f"model:{model_dir}"] = model_sha256(model_dir)
    if finished_run(out, NAME, cfg.model_dump(mode="json"), inputs):
        report.say(f"{out} already holds this run (same config and inputs); nothing to do")
        return _result(out)
    eval_rows, fit_rows = split_rows(rows, cfg.eval_fraction, cfg.seed)
    report.say(f"{len(rows)} task rows: {len(eval_rows)} held out for the report, {len(fit_rows)} for {cfg.method}")

    # 2. Workers: answers come from the generator, grades from the verifiers, confidences from the model read here,
    #    all in the model's own chat format (or the config's template and tool format).
    chat = load_chat(model_dir, cfg.chat_template, cfg.tool_format, source=source)
    report.say(describe(chat))
    tokenizer = chat.tokenizer
    tokens = yes_no_tokens(tokenizer, cfg.elicitation.yes_words, cfg.elicitation.no_words, key="elicitation")
    with Workers(cfg, model_dir, generator, {r.env for r in rows}, report, chat) as workers:
        reader = Reader(*load_model(model_dir), tokenizer=tokenizer, tokens=tokens, chat=chat)
        start_fresh(out)  # only now, with every input checked and the workers up: a late error keeps a finished run

        # 3. Before: the input model's answers on the eval split, graded, with their confidences.
        before = workers.answers(eval_rows, cfg.sampling.eval, "eval split, before")
        run = Calibration(cfg, out, model_dir, inputs, report, workers, reader, fit_rows, eval_rows, before,
                          reader.scores(before, cfg.elicitation), started)

        # 4. The method, then 5. the same eval split with its result.
        method = {"temperature": by_temperature, "tuning": by_tuning, "rlcr": by_rlcr}[cfg.method]
        outcome = method(run)

    # 6. Report, guard, output model, manifest.
    finish(run, outcome)
    return _result(out)


def _result(out: Path) -> StageResult:
    done = StageResult.read(out, model_dir=out)
    if done.manifest.get("status") == "guard_failed":
        return StageResult(done.output_dir, done.manifest, done.model_dir, ok=False,
                           message="the accuracy guard failed; the output folder holds the input model")
    return done


# --------------------------------------------------------------------------------------------------------- workers
class Workers:
    """The rollout generator and one verifier pool per environment, started together and always shut down."""

    def __init__(self, cfg: CalibrateConfig, model_dir: Path, generator: Any, envs: set[str],
                 report: Progress, chat: Any = None) -> None:
        self.cfg, self.model_dir, self.envs, self.say, self.chat = cfg, model_dir, sorted(envs), report.say, chat
        self.generator, self.own_generator = generator, generator is None
        self.verifiers = Verifiers()

    def __enter__(self) -> Workers:
        from posttrain.rollout.engines import make_engine
        from posttrain.rollout.pool import RolloutPool

        try:
            self.verifiers = Verifiers.start(self.cfg.verify, self.envs, self.cfg.envs)
            if self.generator is None and self.cfg.local_engine:
                self.generator = make_engine(self.cfg.rollout.engine, self.model_dir, **self.cfg.rollout.engine_kwargs)
            elif self.generator is None:
                self.generator = RolloutPool.from_config(self.model_dir, self.cfg.rollout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.verifiers.close()
        if self.own_generator and self.generator is not None:
            close = getattr(self.generator, "shutdown", None) or self.generator.close  # a pool, or an engine
            close()

    def answers(self, rows: list[TaskRow], sampling: SamplingConfig, what: str) -> list[GradedAnswer]:
        cfg = self.cfg
        sampling.check_buckets({r.bucket for r in rows}, source="sampling")
        params = [sampling.resolve(r.bucket).with_updates(seed=row_seed(cfg.seed, r)) for r in rows]
        instruction = cfg.elicitation.verbalized_instruction if cfg.elicitation.method == "verbalized" else None
        self.say(f"{what}: answering {len(rows)} rows x {params[0].n if params else 0} ...")
        started = time.perf_counter()
        answers = sample_and_grade(self.generator, rows, params, self.verifiers, agent=cfg.agent, env_kwargs=cfg.envs,
                                   instruction=instruction, chat=self.chat)
        self.say(f"{what}: {sum(a.passed for a in answers)}/{len(answers)} answers correct "
                 f"({time.perf_counter() - started:.0f} s)")
        return answers

    def load_weights(self, folder: Path) -> None:
        self.generator.update_weights_from_path(folder)


def load_rows(cfg: CalibrateConfig, out: Path) -> tuple[list[TaskRow], dict[str, str]]:
    """The task rows and the input hashes to record: from the recipe/dataset, or from the environment's generator
    (each task's environment is the one named in ``generate.env``, which verifies it)."""
    from posttrain.environment import make_env
    from posttrain.tasks import load_tasks

    if cfg.tasks is not None:
        return load_tasks(cfg.tasks, out / "tasks", key="tasks")
    gen = cfg.generate
    env = make_env(gen.env, **cfg.envs.get(gen.env, {}))
    try:
        tasks = list(env.generate_tasks(gen.n, gen.seed))
    finally:
        env.close()
    source = f"generated:{gen.env}:seed={gen.seed}"
    rows = [TaskRow(index=i, id=str(t.get("id", i)), bucket=gen.env, source=source, env=gen.env, task=t)
            for i, t in enumerate(tasks)]
    digest = hashlib.sha256(json.dumps(tasks, sort_keys=True).encode()).hexdigest()
    return rows, {f"tasks:{source}:n={gen.n}": digest}


def split_rows(rows: list[TaskRow], eval_fraction: float, seed: int) -> tuple[list[TaskRow], list[TaskRow]]:
    """(eval, fit): a seeded shuffle by row id and position, so the split does not depend on row order elsewhere."""
    n_eval = max(1, round(len(rows) * eval_fraction))
    if n_eval >= len(rows):
        raise UserError(f"eval_fraction={eval_fraction} of {len(rows)} task rows leaves no rows to calibrate on; "
                        "give more rows or a smaller eval_fraction")

    def key(row: TaskRow) -> str:
        return hashlib.sha256(f"{seed}:split:{row.index}:{row.id}".encode()).hexdigest()

    order = sorted(rows, key=key)
    held = {r.index for r in order[:n_eval]}
    return [r for r in rows if r.index in held], [r for r in rows if r.index not in held]


# ----------------------------------------------------------------------------------------------------------- methods
@dataclass
class MethodResult:
    after: list[GradedAnswer]  # the eval split answered by the result (the same answers when the model is unchanged)
    after_scores: Scores
    candidate: Path | None  # the calibrated model's folder; None when the weights do not change
    temperature: float  # to apply to the elicited score at inference (1.0: none)
    details: dict[str, Any]
    adapter: Path | None = None  # a LoRA applied only when reading confidences (the answering weights unchanged)


def by_temperature(run: Calibration) -> MethodResult:
    """One temperature, fitted on the fit split's answers (drawn as on the eval split); the weights stay."""
    from posttrain.calibration.temperature import apply_temperature, fit_temperature

    cfg, before_scores = run.cfg, run.before_scores
    fit_answers = run.workers.answers(run.fit_rows, cfg.sampling.eval, "fit split")
    fit_scores = run.reader.scores(fit_answers, cfg.elicitation)
    write_answers(run.out / "report" / "answers_fit.jsonl", fit_answers, {"confidence": fit_scores.confidences})
    fit = fit_temperature(fit_scores.raw, [a.passed for a in fit_answers], from_logits=fit_scores.are_logits,
                          where="fit split")
    run.report.say(f"fitted temperature {fit.temperature:.4f} on {len(fit_answers)} answers (NLL "
                   f"{fit.nll_before:.4f} -> {fit.nll_after:.4f})")
    scaled = apply_temperature(before_scores.raw, fit.temperature, from_logits=before_scores.are_logits)
    after_scores = Scores(scaled, before_scores.raw, before_scores.are_logits, before_scores.stats)
    return MethodResult(run.before, after_scores, None, fit.temperature,
                        {"temperature_fit": fit.to_dict(), "fit_answers": len(fit_answers),
                         "elicitation_fit": fit_scores.stats})


def by_tuning(run: Calibration) -> MethodResult:
    """Graded samples on the fit split -> a LoRA trained to predict the grade through p_yes; kept as a confidence
    adapter (the answers stay the input's), or merged (then the eval split is answered and read again)."""
    from posttrain.calibration.tuning import Example, make_trainer
    from posttrain.training.checkpoints import fit
    from posttrain.training.model import save_model
    from posttrain.training.outputs import training_metrics

    cfg, out, reader = run.cfg, run.out, run.reader
    answers = [a for a in run.workers.answers(run.fit_rows, cfg.sampling.train, "fit split, training answers")
               if a.answered]
    examples = [Example(a.messages, a.passed, a.tools or None) for a in answers]
    write_answers(out / "report" / "answers_train.jsonl", answers)
    run.report.say(f"tuning on {len(examples)} graded answers ({sum(e.correct for e in examples)} correct)")
    trainer, counts = make_trainer(reader.model, reader.tokenizer, examples, reader.tokens, cfg.elicitation.query,
                                   cfg.tuning, cfg.lora, out / "work", chat=reader.chat)
    trained, _ = fit(trainer, out / "work", resume=False)
    training = {**training_metrics(trained, {}, trainer.state.log_history, trainer.state.global_step), **counts}
    details = {"training": training, "train_answers": len(answers), "output": cfg.tuning.output}
    if cfg.tuning.output == "adapter":
        # The answering weights stay the input's, so the eval answers are the "before" ones, now read with the adapter.
        adapter = out / "candidate_adapter"
        tuned = trainer.accelerator.unwrap_model(trainer.model).eval()
        tuned.save_pretrained(adapter)
        with_adapter = Reader(tuned, reader.stored_dtype, reader.tokenizer, reader.tokens, reader.chat)
        return MethodResult(run.before, with_adapter.scores(run.before, cfg.elicitation), None, 1.0, details,
                            adapter=adapter)
    candidate = out / "candidate"
    save_model(trainer, candidate, reader.tokenizer, cfg.lora.model_copy(update={"merge": True}), reader.stored_dtype)
    del trainer

    run.workers.load_weights(candidate)
    tuned, _ = load_model(candidate)  # the saved artifact (in its stored dtype) is what gets judged
    after = run.workers.answers(run.eval_rows, cfg.sampling.eval, "eval split, after")
    after_scores = Reader(tuned, reader.stored_dtype, reader.tokenizer, reader.tokens,
                          reader.chat).scores(after, cfg.elicitation)
    return MethodResult(after, after_scores, candidate, 1.0, details)


def by_rlcr(run: Calibration) -> MethodResult:
    """The Logic track's GRPO on the fit split (prompts carrying the confidence instruction), rewarded by
    ``correct - (confidence - correct)^2`` -> the eval split answered by the trained model, confidences parsed."""
    import shutil

    from posttrain.calibration.rlcr import rlcr_rewards, write_track_tasks
    from posttrain.stages.rl_logic import run_logic_track

    cfg, out, workers = run.cfg, run.out, run.workers
    recipe = write_track_tasks(out / "work" / "rlcr_tasks", run.fit_rows, cfg.elicitation.verbalized_instruction)
    candidate = out / "candidate"
    track = {"model": str(workers.model_dir), "output_dir": str(candidate), "tasks": {"recipe": str(recipe)},
             "algorithm": "grpo", "train": cfg.rlcr.train.model_dump(), "sampling": cfg.rlcr.sampling.model_dump(),
             "agent": cfg.agent.model_dump(), "rollout": cfg.rollout.model_dump(), "envs": cfg.envs,
             "verify": cfg.verify.model_dump(), "resume": False, "chat_template": cfg.chat_template,
             "tool_format": cfg.tool_format}
    run.report.say(f"rlcr: GRPO on {len(run.fit_rows)} prompts, reward = correct - (confidence - correct)^2")
    trained = run_logic_track(track, "rlcr", run.report.for_stage("rl-logic"), pool=workers.generator,
                              rewards=lambda envs, verifiers: rlcr_rewards(verifiers))
    (out / "report").mkdir(parents=True, exist_ok=True)
    shutil.copy2(candidate / METRICS_FILE, out / "report" / "rlcr_metrics.jsonl")

    workers.load_weights(candidate)
    after = workers.answers(run.eval_rows, cfg.sampling.eval, "eval split, after")
    after_scores = run.reader.scores(after, cfg.elicitation)  # verbalized: read from the answers, not the model
    return MethodResult(after, after_scores, candidate, 1.0, {"training": trained.metrics})


# ------------------------------------------------------------------------------------------------------------ finish
def finish(run: Calibration, result: MethodResult) -> None:
    """Report + guard; the output model (candidate or input) with its calibration settings; the manifest."""
    import shutil

    from posttrain.calibration.outputs import (
        ADAPTER_DIR,
        accuracy_guard,
        clear_model_files,
        model_hashes,
        save_calibration_settings,
        write_report,
    )
    from posttrain.calibration.report import calibration_report, comparison_table
    from posttrain.manifest import write_manifest
    from posttrain.models.folders import place_model
    from posttrain.report.tables import print_finished

    cfg, out, before, before_scores = run.cfg, run.out, run.before, run.before_scores
    after, after_scores = result.after, result.after_scores
    y_before = np.array([a.passed for a in before], dtype=np.float64)
    y_after = np.array([a.passed for a in after], dtype=np.float64)
    report_before = calibration_report(before_scores.confidences, y_before, where="eval split (before)")
    report_after = calibration_report(after_scores.confidences, y_after, where="eval split (after)")
    guard = accuracy_guard(report_before, report_after, cfg.guard.max_accuracy_drop)

    if after is before:  # same answers, rescaled confidences
        write_answers(out / "report" / "answers_eval.jsonl", before,
                      {"confidence_before": before_scores.confidences, "confidence_after": after_scores.confidences})
    else:
        write_answers(out / "report" / "answers_eval_before.jsonl", before, {"confidence": before_scores.confidences})
        write_answers(out / "report" / "answers_eval_after.jsonl", after, {"confidence": after_scores.confidences})
    details = {"method": cfg.method, "elicitation": cfg.elicitation.method,
               "elicitation_before": before_scores.stats, "elicitation_after": after_scores.stats, **result.details}
    report_files = write_report(out / "report", report_before, report_after, (before_scores.confidences, y_before),
                                (after_scores.confidences, y_after), guard, details,
                                title=f"{cfg.method} ({cfg.elicitation.method})")

    # The output model: the candidate when the guard passed, else the input model (also when weights never change).
    clear_model_files(out)
    adapter = None
    if guard.passed and result.candidate is not None:
        weights = place_model(result.candidate, out, move=True)
        output_model = "calibrated model"
    else:
        weights = place_model(run.model_dir, out, move=False)
        if cfg.chat_template is not None:  # the input's files, with the template the run used (as a trained one has)
            run.reader.tokenizer.save_pretrained(out)
        if not guard.passed:
            output_model = "INPUT model kept: the accuracy guard failed and the calibrated candidate was discarded"
        elif result.adapter is not None:
            result.adapter.replace(out / ADAPTER_DIR)
            adapter = ADAPTER_DIR
            output_model = f"input model weights (answers unchanged) with the confidence adapter in {ADAPTER_DIR}/"
        else:
            output_model = "input model weights with the fitted temperature"
    for leftover in (result.candidate, result.adapter):
        if leftover is not None and leftover.exists():
            shutil.rmtree(leftover)
    if (out / "work").is_dir():
        shutil.rmtree(out / "work")
    save_calibration_settings(out, {
        "calibrated": guard.passed, "method": cfg.method, "elicitation": cfg.elicitation.model_dump(mode="json"),
        "tokens": run.reader.tokens.to_dict(), "temperature": result.temperature if guard.passed else 1.0,
        "scores_are_logits": before_scores.are_logits, "confidence_adapter": adapter})

    status = "calibrated" if guard.passed else "guard_failed"
    metrics = {"status": status, "output_model": output_model, "weights": weights, "guard": guard.to_dict(),
               "before": report_before.to_dict(), "after": report_after.to_dict(),
               "seconds": round(time.perf_counter() - run.started, 1),
               **{k: v for k, v in details.items() if k not in ("method", "elicitation")}}
    outputs = {**model_hashes(out), **{f"report/{k}": v for k, v in report_files.items()}}
    if adapter:
        outputs.update({f"{adapter}/{k}": v for k, v in model_hashes(out / adapter).items()})
    write_manifest(out, {"stage": NAME, "status": status, "output_model": output_model,
                         "config": cfg.model_dump(mode="json"), "inputs": run.inputs, "outputs": outputs,
                         "metrics": metrics})

    run.report.say(comparison_table(report_before, report_after))
    run.report.say(guard.describe())
    print_finished(NAME, out, {"status": status, "output model": output_model, "weights": weights,
                                     "ECE before": report_before.ece, "ECE after": report_after.ece,
                                     "accuracy before": report_before.accuracy,
                                     "accuracy after": report_after.accuracy, "report": str(out / "report")})


# ----------------------------------------------------------------------------------------------- in the pipeline
def wire_calibrate(section: dict[str, Any], w: Wiring) -> None:
    """The policy, and the data stage's ``calibration`` tasks (else its ``tasks``) unless the section generates
    its tasks from an environment."""
    section.setdefault("model", w.policy)
    if "generate" not in section:
        dataset = "calibration" if "data.calibration" in w.products else "tasks"
        section["tasks"] = w.tasks(section.get("tasks"), dataset, "tasks")


def calibrate_summary(cfg: CalibrateConfig) -> dict[str, Any]:
    m = manifest_metrics(cfg.output_dir)
    before, after = m["before"], m["after"]
    return {"gains": [gain("ECE (held-out)", before["ece"], after["ece"]),
                      gain("accuracy (held-out)", before["accuracy"], after["accuracy"]),
                      gain("Brier (held-out)", before["brier"], after["brier"])],
            "details": {"status": m["status"], "method": cfg.method}}


STAGE = Stage(NAME, CalibrateConfig, run_calibrate,
              "Calibrate the model's confidence (method: tuning | rlcr | temperature) and report ECE before/after on "
              "held-out tasks. Exits 1 when the accuracy guard fails (the output folder then holds the input model).",
              model_dir=output_folder, policy=True, eval_name="final", wire=wire_calibrate,
              summary=calibrate_summary)
