"""pass@k and the per-bucket report of a sampling run.

pass@k is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on Code"): with ``n``
samples of a prompt of which ``c`` passed, the chance that at least one of ``k`` samples drawn without replacement
passes is ``1 - C(n-c, k) / C(n, k)``; a bucket's pass@k is the mean over its prompts. It is computed as a product,
not with binomials, so it stays exact for large ``n``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` of the ``n`` samples (``c`` of them correct) is correct."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    p_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
        p_all_wrong *= 1.0 - k / i
    return 1.0 - p_all_wrong


def reason_key(reason: str) -> str:
    """Histogram key of a rejection reason: ``missing_fact:12.50`` counts as ``missing_fact`` (bounded keys)."""
    return reason.split(":", 1)[0]


@dataclass
class BucketStats:
    """Running totals for one bucket; ``add_prompt`` takes one prompt's samples as recorded in a shard."""

    prompts: int = 0
    samples: int = 0
    passed: int = 0
    kept: int = 0
    prompts_with_pass: int = 0
    prompts_with_kept: int = 0
    generated_tokens: int = 0  # model-written tokens of every sample
    kept_tokens: int = 0  # model-written tokens of the kept samples
    kept_total_tokens: int = 0  # every token (prompt, observations, model) of the kept samples
    rejected: Counter = field(default_factory=Counter)  # failed samples by reason (a sample may have several)
    not_selected: Counter = field(default_factory=Counter)  # passed samples left out, by why (duplicate, ...)
    n_values: Counter = field(default_factory=Counter)  # samples per prompt -> prompts
    pass_at_1_sum: float = 0.0
    pass_at_n_sum: float = 0.0

    def add_prompt(self, samples: list[dict[str, Any]], kept: set[int], dropped: dict[int, str]) -> None:
        n = len(samples)
        c = sum(1 for s in samples if s["passed"])
        self.prompts += 1
        self.samples += n
        self.passed += c
        self.kept += len(kept)
        self.prompts_with_pass += c > 0
        self.prompts_with_kept += bool(kept)
        self.n_values[n] += 1
        if n:
            self.pass_at_1_sum += pass_at_k(n, c, 1)
            self.pass_at_n_sum += pass_at_k(n, c, n)
        for s in samples:
            self.generated_tokens += s["model_tokens"]
            if s["sample_index"] in kept:
                self.kept_tokens += s["model_tokens"]
                self.kept_total_tokens += s["total_tokens"]
            elif s["passed"]:
                self.not_selected[dropped.get(s["sample_index"], "unknown")] += 1
            else:
                for reason in s["reasons"] or ["unknown"]:
                    self.rejected[reason_key(reason)] += 1

    def report(self) -> dict[str, Any]:
        n_label = "/".join(str(n) for n in sorted(self.n_values)) or "0"
        return {
            "prompts": self.prompts, "samples": self.samples, "passed": self.passed,
            "pass@1": round(self.pass_at_1_sum / self.prompts, 6) if self.prompts else 0.0,
            # pass@N with N = each prompt's own sample count (one value unless bucket overrides differ)
            f"pass@{n_label}": round(self.pass_at_n_sum / self.prompts, 6) if self.prompts else 0.0,
            "samples_per_prompt": n_label,
            "prompts_with_pass": self.prompts_with_pass, "kept": self.kept, "prompts_with_kept": self.prompts_with_kept,
            "not_selected": dict(sorted(self.not_selected.items())), "generated_tokens": self.generated_tokens,
            "kept_tokens": self.kept_tokens, "kept_total_tokens": self.kept_total_tokens,
            "rejection_reasons": dict(sorted(self.rejected.items())),
        }


def summarize(per_bucket: dict[str, BucketStats]) -> dict[str, Any]:
    """The manifest's metrics: per bucket, and over all buckets."""
    total = BucketStats()
    for b in per_bucket.values():
        for name in ("prompts", "samples", "passed", "kept", "prompts_with_pass", "prompts_with_kept",
                     "generated_tokens", "kept_tokens", "kept_total_tokens", "pass_at_1_sum",
                     "pass_at_n_sum"):
            setattr(total, name, getattr(total, name) + getattr(b, name))
        total.rejected.update(b.rejected)
        total.not_selected.update(b.not_selected)
        total.n_values.update(b.n_values)
    return {"buckets": {name: b.report() for name, b in sorted(per_bucket.items())}, "total": total.report()}
