"""Both RL tracks at once, Chat (DPO) and Logic (GRPO/RLOO), from one SFT model, as separate Ray tasks.

The recipe, top to bottom:

1. config: one file with a ``chat`` and a ``logic`` section (each the track's own config, reusable on its own), the
   shared starting ``model`` and ``output_dir`` (each track writes under ``output_dir/<track>``), and the resources of
   each track (a GPU set on a cluster, a CPU share here);
2. start Ray and one task per track with its own resources; each runs the track's function
   (``run_chat_track`` / ``run_logic_track``), which starts its own rollout workers and writes only under its folder;
3. show live progress per track (a Ray actor collects the tracks' events; the driver renders them);
4. wait for both; a failing track does not stop the other: its error is reported and the other's results are kept;
5. write ``output_dir/manifest.json`` with each track's status, folder and metrics, and print a summary.

Each track checkpoints and resumes on its own, so re-running the same command after a failure re-runs only what is
unfinished (a finished track is a no-op). ``parallel: false`` runs the tracks one after the other (for comparison).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.config import Schema, validate
from posttrain.errors import UserError
from posttrain.manifest import write_manifest

STAGE = "rl"
TRACKS = ("chat", "logic")


class TrackResources(Schema):
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved by the track's trainer actor (threads for torch)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs for the trainer (a GPU set on a cluster)")


class RLConfig(Schema):
    """``posttrain rl`` config: the two tracks and how they share the machine."""

    model: str | None = Field(None, description="the SFT model both tracks start from (fills each track's `model`)")
    output_dir: Path
    tracks: list[Literal["chat", "logic"]] = Field(default_factory=lambda: list(TRACKS))
    parallel: bool = Field(True, description="run the tracks at once (false: one after the other)")
    chat: dict[str, Any] = Field(default_factory=dict, description="the Chat track's config (see configs/rl_chat.yaml)")
    logic: dict[str, Any] = Field(default_factory=dict, description="the Logic track's config (configs/rl_logic.yaml)")
    resources: dict[Literal["chat", "logic"], TrackResources] = Field(default_factory=dict)
    ray_address: str | None = Field(None, description="connect to a running cluster (default: local, or RAY_ADDRESS)")


def track_config(config: RLConfig, track: str, source: str) -> Any:
    """The track's own validated config, with the shared model and its folder under output_dir filled in."""
    from posttrain.rl.config import LogicTrackConfig
    from posttrain.stages.rl_chat import ChatTrackConfig

    section = dict(getattr(config, track))
    if config.model is not None:
        section.setdefault("model", config.model)
    section.setdefault("output_dir", str(Path(config.output_dir) / track))
    schema = ChatTrackConfig if track == "chat" else LogicTrackConfig
    return validate(schema, section, f"{source}: {track}")


def run_track(track: str, config: Any, progress: Any = None) -> dict[str, Any]:
    """Run one track in this process; returns its metrics (the track's manifest or result)."""
    if track == "chat":
        from posttrain.stages.rl_chat import run_chat_track

        result = run_chat_track(config, progress=progress)
        return {"output_dir": str(result.output_dir), "model_dir": str(result.model_dir),
                "win_rate": result.win_rate, "rounds": result.rounds}
    from posttrain.stages.rl_logic import run_logic_track

    manifest = run_logic_track(config, progress=progress)
    # The Logic track saves its model into output_dir itself.
    return {"output_dir": str(config.output_dir), "model_dir": str(config.output_dir),
            "metrics": manifest.get("metrics", {})}


def run(config: RLConfig, source: str = "config") -> dict[str, Any]:
    """Train the configured tracks (at once on Ray, or one after the other); returns the run's manifest."""
    import ray

    from posttrain.rollout.workers import start_ray

    # 1. Every track's config is checked before anything starts: a typo must not surface an hour in.
    configs = {track: track_config(config, track, source) for track in config.tracks}
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 2. Ray and one task per track, each with its own resources.
    if config.ray_address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=config.ray_address or os.environ["RAY_ADDRESS"], ignore_reinit_error=True)
    else:
        start_ray()  # a short fresh temp dir: AF_UNIX socket paths under a deep output_dir would be too long
    board = _ProgressBoard.options(num_cpus=0).remote()
    started = time.monotonic()
    statuses: dict[str, dict[str, Any]] = {}
    try:
        if config.parallel:
            refs = {t: _start_track(t, configs[t], config.resources.get(t, TrackResources()), board)
                    for t in config.tracks}
            statuses = _wait(refs, board)
        else:
            for t in config.tracks:
                ref = _start_track(t, configs[t], config.resources.get(t, TrackResources()), board)
                statuses.update(_wait({t: ref}, board))
    finally:
        ray.shutdown()

    # 3. The run's manifest: each track's outcome, kept whatever the other did.
    manifest = {"stage": STAGE, "config": config.model_dump(mode="json"), "parallel": config.parallel,
                "duration_s": round(time.monotonic() - started, 1), "tracks": statuses}
    write_manifest(out, manifest)
    _print_summary(statuses)
    failed = [t for t, s in statuses.items() if s["status"] != "ok"]
    if failed:
        raise TrackFailed(failed, out)
    return manifest


class TrackFailed(Exception):
    """One or more tracks failed; the others' results are kept. Exit code 1 (not a user error)."""

    def __init__(self, tracks: list[str], out: Path) -> None:
        super().__init__(f"track(s) failed: {', '.join(tracks)}; see {out / 'manifest.json'}")
        self.tracks = tracks


def _start_track(track: str, config: Any, resources: TrackResources, board: Any) -> Any:
    import ray

    runner = ray.remote(_run_track_in_actor).options(
        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, name=None, max_retries=0,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(resources.num_cpus or 1)))}},
    )
    return runner.remote(track, config, board)


def _run_track_in_actor(track: str, config: Any, board: Any) -> dict[str, Any]:
    """Runs inside a Ray worker process: the track, with its progress sent to the board."""
    def progress(event: dict[str, Any]) -> None:
        board.report.remote(track, event)

    return run_track(track, config, progress)


def _wait(refs: dict[str, Any], board: Any) -> dict[str, dict[str, Any]]:
    """Wait for the tracks, rendering their progress; a track's exception becomes its failure report."""
    import ray
    from rich.live import Live

    pending = {ref: track for track, ref in refs.items()}
    statuses: dict[str, dict[str, Any]] = {}
    with Live(_table(ray.get(board.snapshot.remote()), statuses), refresh_per_second=2, transient=False) as live:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                track = pending.pop(ref)
                try:
                    statuses[track] = {"status": "ok", **ray.get(ref)}
                except Exception as e:  # noqa: BLE001 - any failure of a track is reported, the other goes on
                    statuses[track] = {"status": "failed", "error": _describe_failure(e)}
            live.update(_table(ray.get(board.snapshot.remote()), statuses))
    return statuses


def _describe_failure(exc: Exception) -> str:
    """The track's own exception, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, UserError):
        return cause.message
    lines = traceback.format_exception_only(type(cause), cause)
    return "".join(lines).strip()


def _table(events: dict[str, dict[str, Any]], statuses: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="RL tracks")
    for col in ("track", "status", "step", "latest"):
        table.add_column(col)
    for track in sorted(set(events) | set(statuses)):
        ev = events.get(track, {})
        status = statuses.get(track, {}).get("status", "running")
        step = f"{ev.get('step', '')}/{ev.get('max_steps', '')}" if ev.get("max_steps") else str(ev.get("step", ""))
        latest = ev.get("message") or ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in ev.items() if k in ("loss", "reward", "heldout/reward", "rewards/margins", "eval_loss"))
        if status == "failed":
            latest = statuses[track]["error"][:200]
        table.add_row(track, status, step, str(latest)[:120])
    return table


def _print_summary(statuses: dict[str, dict[str, Any]]) -> None:
    from posttrain.cli.common import console

    for track, s in statuses.items():
        if s["status"] == "ok":
            console.print(f"[green]{track}[/]: done, model in {s.get('model_dir')}")
        else:
            console.print(f"[red]{track}[/]: FAILED: {s['error']}")


def _progress_board_class() -> Any:
    import ray

    @ray.remote
    class ProgressBoard:
        """Latest event per track (the driver polls it; tracks never wait on it)."""

        def __init__(self) -> None:
            self.latest: dict[str, dict[str, Any]] = {}

        def report(self, track: str, event: dict[str, Any]) -> None:
            self.latest[track] = {**self.latest.get(track, {}), **event}

        def snapshot(self) -> dict[str, dict[str, Any]]:
            return self.latest

    return ProgressBoard


class _LazyBoard:
    """Defers importing Ray (and defining the actor class) until a run starts."""

    _cls: Any = None

    def options(self, **kwargs: Any) -> Any:
        if _LazyBoard._cls is None:
            _LazyBoard._cls = _progress_board_class()
        return _LazyBoard._cls.options(**kwargs)


_ProgressBoard = _LazyBoard()
