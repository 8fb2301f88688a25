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
from posttrain.errors import StageFailed, UserError
from posttrain.manifest import write_manifest
from posttrain.report import console
from posttrain.stages.contract import Flag, Stage, StageResult, Wiring, gain
from posttrain.stages.rl_chat import STAGE as CHAT
from posttrain.stages.rl_logic import STAGE as LOGIC

NAME = "rl"
TRACKS = {"chat": CHAT, "logic": LOGIC}  # each track is a stage of its own (`posttrain rl-chat`, `rl-logic`)


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


class TrackFailed(StageFailed):
    """One or more tracks failed; the others' results are kept. Exit code 1 (not a user error)."""

    def __init__(self, tracks: list[str], out: Path) -> None:
        super().__init__(f"track(s) failed: {', '.join(tracks)}; see {out / 'manifest.json'}")
        self.tracks = tracks


def track_config(config: RLConfig, track: str, source: str) -> Any:
    """The track's own validated config, with the shared model and its folder under output_dir filled in."""
    section = dict(getattr(config, track))
    if config.model is not None:
        section.setdefault("model", config.model)
    section.setdefault("output_dir", str(Path(config.output_dir) / track))
    return validate(TRACKS[track].schema, section, f"{source}: {track}")


def check_tracks(config: RLConfig, source: str = "config") -> None:
    """The pre-flight of ``rl``: every configured track's section is a valid config of its stage and passes that
    stage's own checks (its output folder, trackers, rollout engines), so ``--dry-run`` and the pipeline's plan
    refuse a bad ``chat``/``logic`` section, not a Ray task an hour in."""
    for track in config.tracks:
        TRACKS[track].check(track_config(config, track, source), f"{source}: {track}")


def run(config: RLConfig, source: str = "config", progress: Any = None) -> StageResult:
    """Train the configured tracks (at once on Ray, or one after the other); the run's manifest says how each went.
    Raises TrackFailed (after writing the manifest) when a track failed."""
    import ray

    from posttrain.rollout.workers import start_ray

    # 1. Every track's config is checked before anything starts: a typo must not surface an hour in.
    out = STAGE.open(config, source)  # with check_tracks: each track's section and its own pre-flight
    configs = {track: track_config(config, track, source) for track in config.tracks}

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
    manifest = {"stage": NAME, "config": config.model_dump(mode="json"), "parallel": config.parallel,
                "duration_s": round(time.monotonic() - started, 1), "tracks": statuses}
    write_manifest(out, manifest)
    _print_summary(statuses)
    failed = [t for t, s in statuses.items() if s["status"] != "ok"]
    if failed:
        raise TrackFailed(failed, out)
    return StageResult.read(out)


def run_track(track: str, config: Any, progress: Any = None) -> dict[str, Any]:
    """Run one track's stage in this process; what the run's manifest records of it."""
    done = TRACKS[track].run(config, progress=progress)
    return {"output_dir": str(done.output_dir), "model_dir": str(done.model_dir), "metrics": done.metrics,
            **({"win_rate": done.metrics.get("final_win_rate"), "rounds": done.metrics.get("rounds")}
               if track == "chat" else {})}


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
            for k, v in ev.get("metrics", {}).items()
            if k in ("loss", "reward", "heldout/reward", "rewards/margins", "eval_loss"))
        if status == "failed":
            latest = statuses[track]["error"][:200]
        table.add_row(track, status, step, str(latest)[:120])
    return table


def _print_summary(statuses: dict[str, dict[str, Any]]) -> None:
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
            """Merge a Progress event: the newest message, step and metrics (a phase message has no step)."""
            latest = self.latest.setdefault(track, {"message": "", "step": 0, "max_steps": 0, "metrics": {}})
            latest["message"] = event.get("message", "")
            if event.get("max_steps"):
                latest.update(step=event["step"], max_steps=event["max_steps"])
            latest["metrics"] = {**latest["metrics"], **(event.get("metrics") or {})}

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


# ----------------------------------------------------------------------------------------------- in the pipeline
def wire_rl(section: dict[str, Any], w: Wiring) -> None:
    """Both tracks start from the policy; Chat reads the preference pairs (offline) and prompts (on-policy) and the
    reward model; Logic the training and held-out tasks."""
    section.setdefault("model", w.policy)
    tracks = section.get("tracks", list(TRACKS))
    if isinstance(tracks, list) and "chat" in tracks:
        section["chat"] = _wire_chat(dict(section.get("chat") or {}), w)
    if isinstance(tracks, list) and "logic" in tracks:
        logic = dict(section.get("logic") or {})
        logic["tasks"] = w.tasks(logic.get("tasks"), "tasks", "logic.tasks")
        heldout = logic.setdefault("heldout", {})
        if isinstance(heldout, dict):
            heldout["tasks"] = w.tasks(heldout.get("tasks"), "heldout", "logic.heldout.tasks")
        section["logic"] = logic


def _wire_chat(chat: dict[str, Any], w: Wiring) -> dict[str, Any]:
    if isinstance(chat.get("offline"), dict) and "data" not in chat["offline"]:
        chat["offline"] = {"data": w.dataset("preference", "chat.offline.data"), **chat["offline"]}
    if isinstance(chat.get("on_policy"), dict) and "prompts" not in chat["on_policy"]:
        chat["on_policy"] = {"prompts": w.dataset("preference", "chat.on_policy.prompts"), **chat["on_policy"]}
    scorer = chat.get("scorer", {} if w.enabled("rm") else None)
    if isinstance(scorer, dict) and scorer.get("kind", "reward_model") == "reward_model" and not scorer.get(
            "reward_model"):
        if not w.enabled("rm"):
            raise UserError(f"{w.source}: rl: chat.scorer.reward_model: not set and the rm stage is not enabled; "
                            "enable rm, set chat.scorer.reward_model, or use chat.scorer.kind: judge")
        chat["scorer"] = {**scorer, "reward_model": w.products["rm"]}
    return chat


def rl_products(cfg: RLConfig, w: Wiring) -> None:
    """Each track's model, where its own stage leaves it; the Chat track's held-out split (eval's win rate keeps to
    the prompts it never trained on)."""
    for track in cfg.tracks:
        checked = track_config(cfg, track, w.source + ": rl")
        w.produced(f"rl.{track}", TRACKS[track].model_dir(checked), eval_name=track)
        if track == "chat":
            w.shared["chat_split"] = {"held_out_fraction": checked.eval_fraction, "split_seed": checked.seed,
                                      "prompts": str(checked.on_policy.prompts if checked.on_policy
                                                     else checked.offline.data)}
    w.shared["rl_tracks"] = list(cfg.tracks)


def rl_skipped(w: Wiring) -> None:
    for track in TRACKS:
        w.products[f"rl.{track}"] = w.policy


def rl_summary(cfg: RLConfig) -> dict[str, Any]:
    from posttrain.manifest import read_manifest

    tracks = read_manifest(cfg.output_dir)["tracks"]
    gains, details = [], {}
    chat = tracks.get("chat")
    if chat and chat.get("status") == "ok":
        gains.append(gain("chat win rate vs start", 0.5, chat.get("win_rate")))  # the start model ties itself
        margins = [r["dpo"]["margin"] for r in chat.get("rounds", []) if r.get("dpo") and r["dpo"]["margin"]["count"]]
        if margins:
            gains.append(gain("chat DPO margin", margins[0]["first"], margins[-1]["last"]))
        details["chat_rounds"] = len(chat.get("rounds", []))
    logic = tracks.get("logic")
    if logic and logic.get("status") == "ok":
        m = logic.get("metrics", {})
        before, after = m.get("heldout_before") or {}, m.get("heldout_after") or {}
        if before and after:
            gains.append(gain("logic held-out reward", before.get("heldout/reward"), after.get("heldout/reward")))
            gains.append(gain("logic held-out accuracy", before.get("heldout/accuracy"),
                              after.get("heldout/accuracy")))
        gains.append(gain("logic train reward", m.get("train_reward_first"), m.get("train_reward_last")))
        details["logic_steps"] = m.get("steps")
    details["failed"] = [t for t, s in tracks.items() if s.get("status") != "ok"]
    return {"gains": gains, "details": details}


def _tracks_flag(value: str) -> list[str]:
    if value not in ("chat", "logic", "both"):
        raise UserError(f"--track {value!r}: expected chat, logic or both")
    return [] if value == "both" else [f"tracks=[{value}]"]


STAGE = Stage(NAME, RLConfig, run,
              "Train the RL tracks from one SFT model: Chat (DPO) and Logic (GRPO/RLOO), at once with their own "
              "resources.",
              wire=wire_rl, produces=rl_products, pass_through=rl_skipped, summary=rl_summary,
              flags=(Flag("--track", "chat, logic, or both (at once, as separate Ray tasks).", "both", _tracks_flag),),
              nested={track: s.name for track, s in TRACKS.items()}, preflight=check_tracks,
              no_ray_task="the RL tracks already run as Ray tasks with their own resources; set rl.resources.chat / "
                          "rl.resources.logic instead")
