"""The Chat track on a tiny model with real TRL trainers and real rollout workers (transformers engine, local Ray):
offline DPO raises the chosen-rejected margin; on-policy rounds build best/worst pairs from reward-model scores,
push new weights to the workers, measure the win rate, and resume after a kill; bad configs are UserErrors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from posttrain.config import load_config
from posttrain.errors import UserError
from posttrain.manifest import read_jsonl
from posttrain.preference.winrate import win_rate
from posttrain.stages.rl_chat import ChatTrackConfig, run_chat_track
from posttrain.stages.rm import RMStageConfig, run_rm

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = ROOT / "data_recipes/preference_tiny.yaml"


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rl_chat_rm") / "rm"
    return run_rm(load_config(RMStageConfig, None, [
        f"model={tiny_model_dir}", f"data={TINY_RECIPE}", f"output_dir={out}", "train.max_steps=6",
        "train.learning_rate=1e-3", "train.max_length=256", "train.report_to=[]"])).output_dir


@pytest.fixture(scope="module")
def workers(tiny_model_dir: Path) -> Any:
    import ray

    from posttrain.rollout.pool import RolloutPool

    started_here = not ray.is_initialized()
    pool = RolloutPool(tiny_model_dir, num_workers=1, engine="hf", resources={"num_cpus": 0.5})
    yield pool
    pool.shutdown()
    if started_here:
        ray.shutdown()


def track_config(model: Path, out: Path, *extra: str) -> ChatTrackConfig:
    return load_config(ChatTrackConfig, None, [f"model={model}", f"output_dir={out}", "eval_fraction=0.2", *extra])


DPO = ["batch_size=4", "learning_rate=1e-3", "report_to=[]", "max_length=256"]


def test_offline_dpo_raises_the_chosen_rejected_margin(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = track_config(tiny_model_dir, tmp_path / "track", f"offline.data={TINY_RECIPE}", "win_rate.prompts=0",
                       "offline.train.max_steps=6", *[f"offline.train.{x}" for x in DPO])
    result = run_chat_track(cfg, progress=lambda e: None)
    [summary] = result.metrics["rounds"]
    dpo = summary["dpo"]
    assert summary["kind"] == "offline" and summary["trained"] and dpo["steps"] == 6
    # Policy starts equal to the reference: margin 0 at step 1, then rises on the training batches...
    logs = [r for r in read_jsonl(tmp_path / "track/metrics.jsonl") if r["kind"] == "train" and "loss" in r]
    margins = [r["rewards/margins"] for r in logs]
    assert margins[0] == 0.0 and max(margins[-3:]) > 0.05
    assert dpo["margin"]["last"] == margins[-1]
    # ...and on held-out pairs (split by prompt, never trained on).
    assert dpo["eval_margin_before"] == 0.0 and dpo["eval_margin_after"] > 0.02
    assert dpo["eval_accuracy_after"] > 0.5
    assert dpo["pairs_train"] + dpo["pairs_eval"] == 48 and dpo["pairs_eval"] >= 3
    # The final model is the round's model, saved in float32 (DPO's small steps do not survive bf16).
    from safetensors import safe_open

    with safe_open(str(result.model_dir / "model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F32"}
    manifest = json.loads((tmp_path / "track/manifest.json").read_text())
    assert manifest["stage"] == "rl_chat" and manifest["model"] == "model"


class Interrupt(Exception):
    pass


def test_on_policy_rounds_pairs_win_rate_weights_and_resume(tiny_model_dir: Path, reward_model: Path, workers: Any,
                                                            tmp_path: Path) -> None:
    from posttrain.preference.scorers import RewardModelScorer
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.rollout.sampling import SamplingParams

    out = tmp_path / "track"
    base = [f"on_policy.prompts={TINY_RECIPE}", "on_policy.prompts_per_round=6", "on_policy.samples_per_prompt=3",
            "on_policy.sampling.max_tokens=12", "on_policy.train.max_steps=3", "on_policy.train.save_steps=1",
            *[f"on_policy.train.{x}" for x in DPO], f"scorer.reward_model={reward_model}", "win_rate.prompts=5",
            "win_rate.sampling.max_tokens=12"]

    # 1. Killed during round 1's training, right after its first checkpoint.
    def kill_at_checkpoint(event: dict[str, Any]) -> None:
        if event["event"] == "checkpoint" and event["round"] == 1:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_chat_track(track_config(tiny_model_dir, out, "on_policy.rounds=1", *base), progress=kill_at_checkpoint,
                       workers=workers)
    assert not (out / "rounds/01/manifest.json").exists()
    pairs_before = (out / "rounds/01/pairs.jsonl").read_text()

    # 2. Run again: the round resumes from that checkpoint, on the same pairs.
    steps: list[int] = []
    run_chat_track(track_config(tiny_model_dir, out, "on_policy.rounds=1", *base),
                   progress=lambda e: steps.append(e["step"]) if e["event"] == "log" else None, workers=workers)
    assert steps and min(steps) == 2 and max(steps) == 3
    assert (out / "rounds/01/pairs.jsonl").read_text() == pairs_before
    round1 = json.loads((out / "rounds/01/manifest.json").read_text())
    mtime1 = (out / "rounds/01/manifest.json").stat().st_mtime_ns

    # Pairs: best vs worst of each prompt's scored samples, scores as the reward model gives them.
    scorer = RewardModelScorer(reward_model)
    samples = read_jsonl(out / "rounds/01/samples.jsonl")
    pairs = {p["id"]: p for p in read_jsonl(out / "rounds/01/pairs.jsonl")}
    assert len(samples) == 6 and all(len(s["samples"]) == 3 for s in samples)
    for row in samples:
        texts = [s["text"] for s in row["samples"]]
        fresh = scorer.score([row["prompt"]] * 3, texts)
        assert fresh == pytest.approx([s["score"] for s in row["samples"]], abs=1e-4)
        if max(fresh) - min(fresh) > 1e-4 and len(set(texts)) > 1:
            pair = pairs[row["id"]]
            assert pair["chosen"][0]["content"] == texts[fresh.index(max(fresh))]
            assert pair["rejected"][0]["content"] == texts[fresh.index(min(fresh))]
    stats = round1["metrics"]["pairs"]
    assert stats["prompts"] == 6 and stats["responses"] == 18
    assert stats["pairs"] + stats["skipped_ties"] + stats["skipped_unscored"] + stats["skipped_identical"] == 6
    assert stats["pairs"] == len(pairs) > 0

    # 3. Two rounds now: round 1 is kept as it was, round 2 starts from its model.
    result = run_chat_track(track_config(tiny_model_dir, out, "on_policy.rounds=2", *base),
                            progress=lambda e: None, workers=workers)
    assert (out / "rounds/01/manifest.json").stat().st_mtime_ns == mtime1
    assert [r["round"] for r in result.metrics["rounds"]] == [1, 2]
    round2 = result.metrics["rounds"][1]
    assert round2["dpo"]["reference"] == str(out / "rounds/01/model")

    # The workers answered the win-rate prompts with round 2's weights (pushed by update_weights_from_path).
    answers = read_jsonl(out / "rounds/02/win_rate.jsonl")
    engine = HFEngine(out / "rounds/02/model", dtype="float32")
    tok = engine.tokenizer
    for a, held in zip(answers, read_jsonl(out / "reference/answers.jsonl"), strict=True):
        assert a["id"] == held["id"]
    from posttrain.preference.data import load_prompts

    all_prompts = {r["id"]: r["prompt"] for r in load_prompts(out / "data/prompts", "k")[0]}
    ids = [all_prompts[a["id"]] for a in answers]
    local = engine.generate([tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                     return_dict=True)["input_ids"] for p in ids],
                            SamplingParams(temperature=0.0, max_tokens=12))
    assert [s[0].text for s in local] == [a["answer"] for a in answers]

    # Win rate: recomputed from the stored scores; answers to held-out prompts only.
    stored = round2["win_rate"]
    again = win_rate([a["score"] for a in answers], [a["reference_score"] for a in answers]).to_dict()
    assert {k: stored[k] for k in again} == again and stored["compared"] == 5
    trained_ids = {r["id"] for r in samples} | {p["id"] for p in read_jsonl(out / "rounds/02/samples.jsonl")}
    assert trained_ids.isdisjoint(a["id"] for a in answers)
    assert result.metrics["final_win_rate"] == stored["rate"]

    # Track outputs: metrics.jsonl per round, the final model, the manifest.
    rows = read_jsonl(out / "metrics.jsonl")
    assert {(r["round"], r["kind"]) for r in rows} >= {(1, "train"), (1, "pairs"), (1, "win_rate"), (2, "train")}
    assert (result.model_dir / "model.safetensors").read_bytes() == \
        (out / "rounds/02/model/model.safetensors").read_bytes()

    # 4. The same folder with a different recipe is refused, naming what changed.
    with pytest.raises(UserError, match=r"cfg.yaml: .* started with a different on_policy\.samples_per_prompt"):
        run_chat_track(track_config(tiny_model_dir, out, "on_policy.rounds=2", *base,
                                    "on_policy.samples_per_prompt=4"), source="cfg.yaml", workers=workers)


def test_judge_scorer_through_rollout_workers(workers: Any, tiny_model_dir: Path) -> None:
    """A random tiny model is a useless judge: its replies hold no rating. That must give None, counted, not crash."""
    from posttrain.models.loading import load_tokenizer
    from posttrain.preference.scorers import JudgeScorer
    from posttrain.rollout.sampling import SamplingParams

    judge = JudgeScorer(workers, load_tokenizer(tiny_model_dir), SamplingParams(temperature=1.0, max_tokens=6, n=2,
                                                                                 seed=1))
    prompts = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(4)]
    answers = ["2", "4", "six", "x " * 3000]  # the last one does not fit the judge's context
    scores = judge.score(prompts, answers)
    stats = judge.stats()
    assert scores[3] is None and stats["too_long"] == 1 and stats["judged"] == 4
    assert stats["unscored"] == sum(s is None for s in scores)
    assert stats["unparsed_ratings"] <= 6
    assert all(s is None or 1 <= s <= 10 for s in scores)


def test_bad_inputs_are_user_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = track_config(tiny_model_dir, tmp_path / "t", f"offline.data={tmp_path / 'missing.yaml'}",
                       "win_rate.prompts=0")
    with pytest.raises(UserError, match=r"cfg.yaml: offline.data: recipe file not found"):
        run_chat_track(cfg, source="cfg.yaml")
    assert not (tmp_path / "t/track.json").exists()  # nothing is recorded for a track that could not start
    cfg = track_config(tiny_model_dir, tmp_path / "t", f"offline.data={TINY_RECIPE}", "win_rate.prompts=0",
                       f"scorer.reward_model={tiny_model_dir}", "on_policy.prompts=" + str(TINY_RECIPE))
    with pytest.raises(UserError, match=r"cfg.yaml: scorer.reward_model: .* is not a reward model"):
        run_chat_track(cfg, source="cfg.yaml")


def test_judge_selected_by_config_with_no_usable_ratings_leaves_the_policy_unchanged(
        tiny_model_dir: Path, workers: Any, tmp_path: Path) -> None:
    """scorer.kind: judge starts the judge's own workers; a judge whose replies hold no rating gives no pairs (each
    prompt counted as unscored), the round trains nothing, and the win rate compares nothing: no crash anywhere."""
    cfg = track_config(tiny_model_dir, tmp_path / "track", f"on_policy.prompts={TINY_RECIPE}", "on_policy.rounds=1",
                       "on_policy.prompts_per_round=3", "on_policy.samples_per_prompt=2",
                       "on_policy.sampling.max_tokens=4", "scorer.kind=judge", f"scorer.judge_model={tiny_model_dir}",
                       "scorer.judge_rollout.engine=hf", "scorer.judge_rollout.resources.num_cpus=0.5",
                       "scorer.judge_sampling.max_tokens=3", "win_rate.prompts=2", "win_rate.sampling.max_tokens=4")
    result = run_chat_track(cfg, progress=lambda e: None, workers=workers)
    [summary] = result.metrics["rounds"]
    pairs = summary["pairs"]
    assert summary["trained"] is False and summary["model_dir"] == str(tiny_model_dir)
    assert pairs["prompts"] == 3 and pairs["pairs"] == 0
    assert pairs["skipped_unscored"] + pairs["skipped_ties"] + pairs["skipped_identical"] == 3
    assert pairs["scorer"]["judged"] == 6  # 3 prompts x 2 answers (this round's share of the counters)
    assert summary["win_rate"]["compared"] + summary["win_rate"]["unscored"] == 2
    assert (result.model_dir / "model.safetensors").read_bytes() == \
        (tiny_model_dir / "model.safetensors").read_bytes()
