"""The stage contract: what every stage module ends with, and what the CLI and the pipeline read from it.

A stage module reads top to bottom: its config schema, its ``run`` function, then one :class:`Stage` describing it::

    def run_sft(cfg: SFTStageConfig, *, source: str = "config", progress: Progress | None = None) -> StageResult:
        ...

    STAGE = Stage("sft", SFTStageConfig, run_sft, "Supervised fine-tuning on a built chat dataset ...",
                  model_dir=lambda cfg: cfg.output_dir, wire=trainer_inputs("sft"), summary=training_summary)

and ``posttrain/stages/__init__.py`` lists it once in the ordered registry. From that description the CLI makes the
command (``--config``, ``KEY=VALUE`` overrides, ``--dry-run``) and the pipeline wires, fingerprints, skips, resumes,
runs and summarises the stage; a stage without ``wire`` is a command only (``sample``, ``rl-chat``, ``rl-logic``).

Every stage starts with ``STAGE.open(cfg, source)`` (:mod:`posttrain.stages.preflight`: the output folder may be
written, the trackers and rollout engines it asks for exist; the folder is marked as the stage's), writes into
``cfg.output_dir`` (with its ``manifest.json``), finds a finished run of the same config and inputs with
:func:`posttrain.manifest.finished_run` (re-running is a no-op), resumes a killed run from its own checkpoints or
shards, and reports through a :class:`posttrain.report.Progress`. The CLI and the pipeline call ``check`` on
``--dry-run`` and when planning, and ``open`` before ``run`` (so a plugin stage gets the same checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from posttrain.manifest import MANIFEST, read_manifest


def output_folder(cfg: Any) -> Path:
    """Where most stages leave their model: the output folder itself."""
    return Path(cfg.output_dir)


def output_folders(cfg: Any) -> list[Path]:
    return [Path(cfg.output_dir)]


@dataclass(frozen=True)
class StageResult:
    """What one run of a stage produced. ``ok`` False: the stage finished, but its command exits 1 (calibration's
    accuracy guard kept the input model); ``message`` says why."""

    output_dir: Path
    manifest: dict[str, Any]
    model_dir: Path | None = None
    ok: bool = True
    message: str = ""

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @classmethod
    def read(cls, out: Path | str, model_dir: Path | str | None = None, **kw: Any) -> StageResult:
        """The result a stage left in ``out``, with its manifest as written (versions included)."""
        return cls(Path(out), read_manifest(out), Path(model_dir) if model_dir is not None else None, **kw)


class Wiring(Protocol):
    """What the pipeline offers a stage while it wires the stage's inputs (see ``posttrain.pipeline.graph``)."""

    run_dir: Path
    source: str
    policy: str  # the current policy model: the last enabled model-producing stage's model, or the run's model
    products: dict[str, str]  # output name (``sft``, ``data.tasks``, ``rl.chat``, ...) -> folder
    models: dict[str, str]  # the run's models eval compares: name (``base``, ``sft``, ``final``, ...) -> folder
    shared: dict[str, Any]  # what a stage leaves for later stages' wiring (the RL tracks, the Chat track's split)

    def dataset(self, name: str, key: str) -> str: ...
    def tasks(self, given: Any, dataset: str, key: str) -> Any: ...
    def enabled(self, stage: str) -> bool: ...
    def produced(self, ref: str, path: str | Path, *, policy: bool = False, eval_name: str | None = None) -> None:
        """``ref`` names ``path`` for later stages; ``policy``: it is the next stage's input model; ``eval_name``: it
        is a model eval compares, under that name."""


Wire = Callable[[dict[str, Any], Wiring], None]


@dataclass(frozen=True)
class Flag:
    """A command-line flag of a stage's command that stands for overrides (``rl --track chat``)."""

    name: str
    help: str
    default: str
    overrides: Callable[[str], list[str]]


@dataclass(frozen=True)
class Stage:
    """One stage: its command, config schema and run function, and how the pipeline wires and summarises it.

    ``model_dir(cfg)``: where the stage leaves its model (known before it runs, for wiring); ``policy``: that model
    becomes the next stage's input, and a disabled stage passes its input through instead; ``eval_name``: the name
    eval's table gives that model (eval compares every such model of the run). ``wire(section, w)``
    fills in what a pipeline section leaves out (inputs; ``output_dir`` defaults to ``RUN/<name>``); ``produces(cfg,
    w)`` names what it made for later stages (default: its model, or its folder, under its name); ``pass_through(w)``
    replaces ``produces`` when the stage is disabled. ``summary(cfg)`` reads its outputs into the pipeline's row
    ``{"gains": [{metric, before, after}], "details": {...}}``; ``show(result)`` prints what its command shows at the
    end; ``work_folders(cfg)`` are cleared when a run of another config left them; ``extra_inputs(cfg)`` are inputs
    the config does not name as paths (a recipe's sources); ``flags`` are extra command-line flags of its command;
    ``preflight(cfg, source)`` adds the stage's own up-front checks to :meth:`check`; ``manifest_stage`` is the
    ``stage`` its manifests record, when not its name.
    """

    name: str
    schema: type
    run: Callable[..., StageResult]
    help: str
    model_dir: Callable[[Any], Path] | None = None
    policy: bool = False
    eval_name: str | None = None
    wire: Wire | None = None
    produces: Callable[[Any, Wiring], None] | None = None
    pass_through: Callable[[Wiring], None] | None = None
    summary: Callable[[Any], dict[str, Any]] | None = None
    show: Callable[[StageResult], None] | None = None
    work_folders: Callable[[Any], list[Path]] = output_folders
    extra_inputs: Callable[[Any], dict[str, str]] | None = None
    flags: tuple[Flag, ...] = ()
    command: bool = True  # a `posttrain <name>` command (the pipeline's data stage is `posttrain data build`)
    nested: dict[str, str] = field(default_factory=dict)  # sections that are other stages' configs (rl: chat, logic)
    no_ray_task: str = ""  # why the pipeline may not run it as a Ray task (it starts its own), if so
    preflight: Callable[[Any, str], None] | None = None
    manifest_stage: str = ""

    @property
    def stage_id(self) -> str:
        """What its manifests (and its output folder's mark) call it."""
        return self.manifest_stage or self.name

    def check(self, cfg: Any, source: str = "config") -> None:
        """What the config cannot say about itself, checked before anything is written or removed: the output folder
        (see :func:`posttrain.stages.preflight.check_output_dir`), the trackers and rollout engines it asks for, and
        the stage's own ``preflight``. Writes nothing (``--dry-run`` and the pipeline's plan call it)."""
        from posttrain.stages.preflight import check_environment, check_output_dir

        check_output_dir(self.stage_id, cfg, source)
        check_environment(cfg, source)
        if self.preflight is not None:
            self.preflight(cfg, source)

    def open(self, cfg: Any, source: str = "config") -> Path:
        """:meth:`check`, then mark ``output_dir`` as this stage's (before the first write); -> the folder. Every
        stage's ``run`` starts with it; calling it again is harmless."""
        from posttrain.stages.preflight import claim_output_dir

        self.check(cfg, source)
        out = Path(cfg.output_dir).expanduser()
        claim_output_dir(self.stage_id, out)
        return out

    @property
    def in_pipeline(self) -> bool:
        return self.wire is not None

    def record(self, cfg: Any, w: Wiring) -> None:
        """After validation: name what this stage produces for the stages after it."""
        if self.produces is not None:
            self.produces(cfg, w)
        elif self.model_dir is not None:
            w.produced(self.name, self.model_dir(cfg), policy=self.policy, eval_name=self.eval_name)
        else:
            w.produced(self.name, cfg.output_dir)

    def skip(self, w: Wiring) -> None:
        """A disabled stage: what it would have produced is what it would have read."""
        if self.pass_through is not None:
            self.pass_through(w)
        elif self.policy:
            w.products[self.name] = w.policy


# ------------------------------------------------------------------------------------------ helpers for stage modules
def trainer_inputs(dataset: str) -> Wire:
    """The training stages' wiring: the policy model and the data stage's dataset of the given name."""
    def wire(section: dict[str, Any], w: Wiring) -> None:
        section.setdefault("model", w.policy)
        if "data" not in section:
            section["data"] = w.dataset(dataset, "data")
    return wire


def gain(metric: str, before: Any, after: Any) -> dict[str, Any]:
    return {"metric": metric, "before": before, "after": after}


def manifest_metrics(folder: Path | str) -> dict[str, Any]:
    """The metrics a finished stage wrote (the pipeline summary reads them)."""
    path = Path(folder) / MANIFEST
    return read_manifest(path.parent).get("metrics", {})


def training_summary(cfg: Any) -> dict[str, Any]:
    """midtrain and sft: train loss first -> last, with the run's size."""
    m = manifest_metrics(cfg.output_dir)
    keep = ("steps", "eval_loss", "eval_perplexity", "tokens", "duration_s", "rows_train", "documents_train")
    return {"gains": [gain("train loss", m.get("train_loss_first"), m.get("train_loss_last"))],
            "details": {k: m[k] for k in keep if m.get(k) is not None}}
