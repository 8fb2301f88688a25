"""Accuracy and pass@k per bucket (and over a whole set) from the verified sample records of one model on one set.

* accuracy: the share of prompts whose one answer (``mode: accuracy``) passed its environment's verifier;
* reward (with a ``rewards`` section): the mean reward of the accuracy answers (weighted verify score plus your
  reward functions);
* pass@k: for each prompt, ``n`` sampled answers (``mode: pass@k``) of which ``c`` passed give the unbiased estimate
  ``1 - C(n-c, k) / C(n, k)`` (:func:`posttrain.rejection.metrics.pass_at_k`); a bucket's pass@k is its prompts' mean.

Failed samples are counted by reason (``wrong_answer``, ``no_answer``, ``env_error``, ...), so a low number says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from posttrain.rejection.metrics import pass_at_k, reason_key

ALL = "all"
ACCURACY = "accuracy"
PASS_AT_K = "pass@k"
REWARD = "reward"


def _bucket_metrics(accuracy: dict[int, list[bool]], sampled: dict[int, list[bool]], failures: Counter,
                    ks: list[int], rewards: list[float] | None = None) -> dict[str, Any]:
    metrics: dict[str, Any] = {"prompts": len(accuracy or sampled)}
    if accuracy:
        metrics[ACCURACY] = round(sum(all(p) for p in accuracy.values()) / len(accuracy), 6)
        metrics["failures"] = dict(sorted(failures.items()))
    if rewards:
        metrics[REWARD] = round(sum(rewards) / len(rewards), 6)
    if sampled:
        counts = [(len(p), sum(p)) for p in sampled.values()]
        metrics[PASS_AT_K] = {
            "samples": sum(n for n, _ in counts), "passed": sum(c for _, c in counts),
            **{f"pass@{k}": round(sum(pass_at_k(n, c, k) for n, c in counts) / len(counts), 6) for k in ks},
        }
    return metrics


def set_metrics(samples: Iterable[dict[str, Any]], ks: list[int], with_rewards: bool = False) -> dict[str, Any]:
    """``{"buckets": {bucket: metrics}, "all": metrics}`` for one model's samples on one set."""
    accuracy: dict[str, dict[int, list[bool]]] = {}
    sampled: dict[str, dict[int, list[bool]]] = {}
    failures: dict[str, Counter] = {}
    rewards: dict[str, list[float]] = {}
    for s in samples:
        target = accuracy if s["mode"] == ACCURACY else sampled
        for bucket in (s["bucket"], ALL):
            target.setdefault(bucket, {}).setdefault(s["index"], []).append(bool(s["passed"]))
            if with_rewards and s["mode"] == ACCURACY:
                rewards.setdefault(bucket, []).append(float(s.get("reward", s["score"])))
            if s["mode"] == ACCURACY and not s["passed"]:
                failures.setdefault(bucket, Counter()).update(reason_key(r) for r in s["reasons"] or ["unknown"])
    buckets = sorted(set(accuracy) | set(sampled))
    per_bucket = {b: _bucket_metrics(accuracy.get(b, {}), sampled.get(b, {}), failures.get(b, Counter()), ks,
                                     rewards.get(b)) for b in buckets}
    return {"buckets": {b: m for b, m in per_bucket.items() if b != ALL}, ALL: per_bucket.get(ALL, {"prompts": 0})}
