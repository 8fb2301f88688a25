"""Running the graph: each enabled stage in order, skipped when nothing it depends on changed, resumed when a run was
killed inside it, then the summary and the plots.

For each stage, top to bottom:

1. its fingerprint: the resolved config + the content hashes of every folder it reads;
2. ``done`` with that fingerprint and outputs that still hash as recorded -> skipped;
3. a record left by a run with another fingerprint -> its folders are cleared (a checkpoint of another config must
   not be resumed); a record with the same fingerprint that is not ``done`` -> the stage runs again on the same
   folders and resumes from its own checkpoints and shards, which gives the uninterrupted run's result;
4. run it (in this process, or as a Ray task with the section's ``ray_task`` resources), record outputs and metrics.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from posttrain.errors import StageFailed, UserError
from posttrain.pipeline.config import PipelineConfig, stage_names
from posttrain.pipeline.graph import Plan, PlannedStage, plan
from posttrain.pipeline.state import STATE_DIR, HashCache, StageRecord, fingerprint, input_hash, stage_inputs
from posttrain.report import Progress, console, say


def check_range(start: str | None, stop: str | None) -> None:
    names = stage_names()
    for flag, name in (("--from", start), ("--until", stop)):
        if name is not None and name not in names:
            raise UserError(f"{flag} {name}: no such stage; expected one of {', '.join(names)}")
    if start and stop and names.index(start) > names.index(stop):
        raise UserError(f"--from {start} comes after --until {stop}; stage order: {' -> '.join(names)}")


def run_pipeline(cfg: PipelineConfig, source: str, start: str | None = None,
                 stop: str | None = None) -> dict[str, Any]:
    """Run the stages from ``start`` to ``stop`` (default: all); returns the summary (also written to the run folder).
    Raises StageFailed (after writing the summary) when a stage fails."""
    from posttrain.pipeline.summary import print_summary, write_summary

    check_range(start, stop)
    p = plan(cfg, source)
    run_dir = p.run_dir
    write_configs(cfg, p)
    cache = HashCache(run_dir / STATE_DIR / "hashes.json")
    rows: list[dict[str, Any]] = []
    failure: BaseException | None = None
    started = time.monotonic()
    ray_was_running = _ray_running()
    try:
        names = p.names
        for stage in p.stages:
            position = names.index(stage.name)
            if not stage.enabled:
                rows.append({"stage": stage.name, "status": "disabled"})
            elif (start and position < names.index(start)) or (stop and position > names.index(stop)):
                rows.append(_not_run(run_dir, stage, before=bool(start and position < names.index(start))))
            else:
                row = _run_one(p, stage, source, cache)
                rows.append(row)
                if row["status"] == "failed":
                    failure = StageFailed(f"stage {stage.name} failed: {row['error']}")
                    break
    finally:
        cache.save()
        if not ray_was_running and _ray_running():  # stages leave their local Ray instance up for the next stage
            import ray

            ray.shutdown()
    summary = write_summary(p, rows, time.monotonic() - started, source)
    print_summary(summary)
    if failure is not None:
        raise failure
    return summary


def _not_run(run_dir: Path, stage: PlannedStage, before: bool) -> dict[str, Any]:
    """A stage outside --from/--until. The stages before --from must have finished: their outputs are used as they
    are."""
    record = StageRecord(run_dir, stage.name)
    if before and record.status != "done":
        raise UserError(f"--from: stage {stage.name} has not finished in {run_dir} (its outputs are needed); run it "
                        "first, or start from an earlier stage")
    row = {"stage": stage.name, "status": "not run (before --from)" if before else "not run (after --until)"}
    if record.status == "done":
        row.update(metrics=record.data.get("metrics", {}), duration_s=record.data.get("duration_s"))
    return row


def _run_one(p: Plan, stage: PlannedStage, source: str, cache: HashCache) -> dict[str, Any]:
    name, cfg, config = stage.name, stage.config, stage.config_dict()
    inputs = {key: input_hash(spec, cache) for key, spec in stage_inputs(stage.stage, cfg).items()}
    fp = fingerprint(name, config, inputs)
    record = StageRecord(p.run_dir, name)
    if record.status == "done" and record.fingerprint == fp and _outputs(stage, cache) == record.data.get("outputs"):
        say(f"[{name}] unchanged since the last run (same config and inputs): skipped")
        return {"stage": name, "status": "skipped", "fingerprint": fp, "metrics": record.data.get("metrics", {}),
                "duration_s": record.data.get("duration_s")}
    if record.fingerprint is not None and record.fingerprint != fp:
        _clear(p.run_dir, stage.stage.work_folders(cfg))
    elif record.status in ("running", "failed"):
        say(f"[{name}] resuming an unfinished run of the same config")

    console.rule(f"[bold]{name}")
    record.start(fp, inputs)
    began = time.monotonic()
    try:
        where = _execute(stage, source)
    except UserError:
        raise
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - recorded, then reported after the summary
        record.fail(_describe(e), time.monotonic() - began)
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"stage": name, "status": "failed", "error": _describe(e), "fingerprint": fp,
                "duration_s": round(time.monotonic() - began, 1)}
    duration = time.monotonic() - began
    metrics = stage.stage.summary(cfg) if stage.stage.summary else {"gains": [], "details": {}}
    record.finish(_outputs(stage, cache), metrics, duration, where)
    return {"stage": name, "status": "ran", "fingerprint": fp, "metrics": metrics, "duration_s": round(duration, 1),
            "where": where}


def _outputs(stage: PlannedStage, cache: HashCache) -> dict[str, str] | None:
    """Hashes of what later stages read (its products) and of its manifests; None when any is missing."""
    found: dict[str, str] = {}
    for ref, folder in stage.products.items():
        path = Path(folder)
        if not path.is_dir():
            return None
        found[ref] = cache.folder(path)
    for folder in stage.stage.work_folders(stage.config):
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            return None
        found[str(manifest)] = cache.file(manifest)
    return found


def _clear(run_dir: Path, folders: list[Path]) -> None:
    """Remove a stage's folders left by a run of another config (only inside the run folder: never a user's path)."""
    root = run_dir.resolve()
    for folder in folders:
        target = folder.resolve() if folder.exists() or folder.is_symlink() else folder.absolute()
        if target != root and target.is_relative_to(root) and (folder.exists() or folder.is_symlink()):
            say(f"clearing {folder}: it holds a run of another config or other inputs")
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            else:
                shutil.rmtree(folder)


def _execute(stage: PlannedStage, source: str) -> dict[str, Any]:
    """Run the stage here, or as a Ray task with its resources; -> where it ran."""
    if stage.control.ray_task is None:
        try:
            run_stage(stage.stage, stage.config, source)
        finally:
            _release_memory()
        return {"host": socket.gethostname(), "pid": os.getpid(), "ray_task": False}
    return _execute_in_ray_task(stage, source)


def _release_memory() -> None:
    """Hand the memory a finished in-process stage freed back to the OS. glibc keeps freed heap pages in the process
    (a full fine-tune leaves gigabytes), and the next stages' rollout workers and trainers are other processes: on a
    24 GB machine the RL tracks were OOM-killed while this process still held the rs stage's SFT memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _execute_in_ray_task(stage: PlannedStage, source: str) -> dict[str, Any]:
    import ray

    from posttrain.rollout.workers import start_ray

    start_ray()
    task = stage.control.ray_task
    threads = str(max(1, int(task.num_cpus)))
    # max_calls=1: the worker process exits after the stage, so its memory does not outlive it (only settable in
    # ray.remote(), not in .options())
    remote = ray.remote(max_calls=1)(_stage_task).options(
        num_cpus=task.num_cpus, num_gpus=task.num_gpus, resources=task.resources or None, max_retries=0,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": threads}})
    say(f"[{stage.name}] running as a Ray task ({task.num_cpus} CPUs, {task.num_gpus} GPUs"
        + (f", {task.resources}" if task.resources else "") + ")")
    try:
        return {**ray.get(remote.remote(stage.stage, stage.config, source)),
                "cluster": ray.get_runtime_context().gcs_address}
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, UserError | StageFailed):
            raise cause from None
        raise


def run_stage(stage: Any, cfg: Any, source: str) -> None:
    """Run one stage as its own command would, and show what the command shows. A finished stage that is not ok
    (calibration's guard kept the input model) lets later stages go on with its output."""
    where = f"{source}: {stage.name}"
    stage.open(cfg, where)  # checked again now that the stages before it ran, and marked as this stage's folder
    done = stage.run(cfg, where, Progress(stage.name))
    if stage.show is not None:
        stage.show(done)
    if not done.ok:
        say(f"{stage.name}: {done.message}")


def _stage_task(stage: Any, config: Any, source: str) -> dict[str, Any]:
    """Runs inside a Ray worker (on whichever node has the resources)."""
    import ray

    run_stage(stage, config, source)
    return {"host": socket.gethostname(), "pid": os.getpid(), "ray_task": True,
            "node_id": ray.get_runtime_context().get_node_id()}


def _describe(e: BaseException) -> str:
    if isinstance(e, StageFailed):
        return str(e)
    return "".join(traceback.format_exception_only(type(e), e)).strip()


def _ray_running() -> bool:
    import sys

    ray = sys.modules.get("ray")  # not imported: certainly not running (and no need to import it)
    return ray is not None and ray.is_initialized()


def write_configs(cfg: PipelineConfig, p: Plan) -> None:
    """RUN/pipeline/config.yaml (the resolved pipeline) and RUN/pipeline/<stage>.yaml: each enabled stage's resolved
    config, which its own command runs as it is (e.g. ``posttrain sft --config RUN/pipeline/sft.yaml``)."""
    folder = p.run_dir / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _write_yaml(folder / "config.yaml", cfg.model_dump(mode="json"))
    for stage in p.stages:
        if stage.enabled:
            header = f"# {stage.name}: resolved by `posttrain pipeline`"
            if stage.stage.command:
                header += f"; run it alone with: posttrain {stage.name} --config {folder / (stage.name + '.yaml')}"
            _write_yaml(folder / f"{stage.name}.yaml", stage.config_dict(), header)


def _write_yaml(path: Path, data: Any, header: str = "") -> None:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text((header + "\n" if header else "") + text, encoding="utf-8")
    tmp.replace(path)


def dry_run(cfg: PipelineConfig, source: str) -> str:
    """Every stage's resolved config, as YAML (nothing is written or run)."""
    p = plan(cfg, source)
    parts = []
    for stage in p.stages:
        if not stage.enabled:
            parts.append(f"# {stage.name}: disabled (passes its input through)\n")
            continue
        extra = f"  # ray_task: {stage.control.ray_task.model_dump()}" if stage.control.ray_task else ""
        parts.append(f"# {stage.name}{extra}\n" + yaml.safe_dump({stage.name: stage.config_dict()}, sort_keys=False,
                                                                 allow_unicode=True))
    return "\n".join(parts)
