"""The chat part of an eval: held-out prompts, one answer per prompt from each model, scores from the Chat track's
scorer (a reward model, or an LLM judge), and each model's win rate against the reference (the SFT model).

The prompts are chosen as the Chat track chooses its win-rate prompts (its prompt-level held-out split, then the first
by prompt id), so with the track's ``eval_fraction`` and ``seed`` the eval compares on exactly the prompts the track
never trained on. Answers that cannot be scored (a prompt too long for the context, a judge reply with no rating) are
counted as ``unscored`` and left out of the rate, never treated as a loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.evaluation.config import ChatEvalConfig
from posttrain.manifest import file_sha256
from posttrain.preference.data import load_prompts, resolve_data, split_held_out
from posttrain.preference.rollouts import sample_responses
from posttrain.preference.scorers import Scorer
from posttrain.preference.winrate import win_rate
from posttrain.rollout.sampling import SamplingConfig

Row = dict[str, Any]
OUTCOMES = (("wins", "win"), ("ties", "tie"), ("losses", "loss"), ("unscored", "unscored"))


def load_chat_prompts(cfg: ChatEvalConfig, build_dir: Path, source: str) -> tuple[list[Row], dict[str, str], Row]:
    """The prompts to compare on (``{id, bucket, prompt}``), their input hashes, and counts for the manifest."""
    key = f"{source}: chat.prompts"
    folder = resolve_data(cfg.prompts, build_dir, key)
    rows, no_user = load_prompts(folder, key)
    read = len(rows)
    if cfg.held_out_fraction is not None:
        rows = split_held_out(rows, cfg.held_out_fraction, cfg.split_seed)[1]
    held = len(rows)
    rows = sorted(rows, key=lambda r: r["id"])[:cfg.limit]
    if not rows:
        raise UserError(f"{key}: no prompts left to compare ({read} read, {held} held out by held_out_fraction="
                        f"{cfg.held_out_fraction}); raise held_out_fraction or use another prompt set")
    stats = {"prompts_read": read, "without_user_turn": no_user, "held_out": held, "compared": len(rows)}
    return rows, {"chat:data.parquet": file_sha256(folder / "data.parquet")}, stats


def answer_prompts(pool: Any, tokenizer: Any, prompts: list[Row], sampling: SamplingConfig, seed: int) -> list[Row]:
    """One answer per prompt from the model the pool holds; ``answer`` is None when the prompt did not fit."""
    samples, _ = sample_responses(pool, tokenizer, prompts, sampling.model_copy(update={"n": 1}), seed=seed)
    return [{"id": p["id"], "bucket": p["bucket"], "answer": s[0]["text"] if s else None,
             "finish_reason": s[0]["finish_reason"] if s else None, "tokens": s[0]["tokens"] if s else 0}
            for p, s in zip(prompts, samples, strict=True)]


def score_answers(scorer: Scorer, prompts: list[Row], answers: list[Row]) -> list[float | None]:
    """The scorer's score of every answer (None where there is no answer or the scorer gave none)."""
    where = [i for i, a in enumerate(answers) if a["answer"] is not None]
    got = scorer.score([prompts[i]["prompt"] for i in where], [answers[i]["answer"] for i in where]) if where else []
    scores: list[float | None] = [None] * len(answers)
    for i, score in zip(where, got, strict=True):
        scores[i] = score
    return scores


def _outcome(candidate: float | None, reference: float | None, tolerance: float) -> str:
    result = win_rate([candidate], [reference], tolerance)  # one prompt: exactly one of the counts is 1
    return next(label for name, label in OUTCOMES if getattr(result, name))


def compare(scorer: Scorer, prompts: list[Row], answers: dict[str, list[Row]], reference: str,
            tie_tolerance: float = 0.0) -> tuple[dict[str, Row], list[Row]]:
    """Score every model's answers; each model's win rate against ``reference`` (one of ``answers``' keys), overall
    and per bucket, with its mean score. Returns (results per model, one record per model and prompt)."""
    scores = {model: score_answers(scorer, prompts, rows) for model, rows in answers.items()}
    baseline = scores[reference]
    buckets = sorted({p["bucket"] for p in prompts})
    results: dict[str, Row] = {}
    records: list[Row] = []
    for model, model_scores in scores.items():
        scored = [s for s in model_scores if s is not None]
        results[model] = {
            **win_rate(model_scores, baseline, tie_tolerance).to_dict(),
            "mean_score": round(sum(scored) / len(scored), 6) if scored else None,
            "unanswered": sum(a["answer"] is None for a in answers[model]),
            "buckets": {b: win_rate([s for s, p in zip(model_scores, prompts, strict=True) if p["bucket"] == b],
                                    [s for s, p in zip(baseline, prompts, strict=True) if p["bucket"] == b],
                                    tie_tolerance).to_dict() for b in buckets},
        }
        for p, a, s, ref in zip(prompts, answers[model], model_scores, baseline, strict=True):
            records.append({"kind": "chat", "model": model, "set": "chat", "task_id": p["id"], "bucket": p["bucket"],
                            "response": a["answer"], "finish_reason": a["finish_reason"], "score": s,
                            "reference_score": ref, "outcome": _outcome(s, ref, tie_tolerance),
                            "prompt": p["prompt"]})
    return results, records
