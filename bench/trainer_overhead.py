"""posttrain's GRPO and DPO training steps/s vs bare TRL trainers with the same settings, in the same run.

    python bench/trainer_overhead.py                      # SmolLM2-135M-Instruct (a few minutes on 2 cores)
    python bench/trainer_overhead.py --model tiny         # tiny random model: start-up and plumbing dominate
    python bench/trainer_overhead.py --only dpo --steps 8

GRPO: ``posttrain rl-logic`` (``run_logic_track``: episodes from a Ray rollout worker through the agent loop, rewards
from the math environment's verifier processes, weights pushed to the worker after every step) against TRL's
``GRPOTrainer`` as a user would write it by hand: generation with ``model.generate`` in the training process and a
math-verify reward function. Same model, prompts, group size, batch shape, sampling temperature, completion budget,
loss and learning rate; the posttrain worker is an in-process-equivalent transformers engine (``engine: hf``) with
both cores, so what differs is posttrain's plumbing, not the generator.

DPO: ``posttrain.preference.dpo.train_dpo`` (what each Chat-track round runs) against ``DPOTrainer`` with the same
pairs and arguments.

Sampled completions differ in length between the two GRPO runs (different RNG paths), and a step's cost grows with its
completion tokens, so GRPO is compared on completion tokens per second of training loop as well as steps/s. Ratios are
posttrain / bare TRL (target >= 0.9x); "loop" is TRL's ``train_runtime`` (what steps/s means), "wall" adds model
loading, worker start-up and saving. Both sides train in posttrain's default precision (``precision: auto``: fp32 on
CPU; TRL's own default would be bf16 autocast), and each side runs ``--repeats`` times, alternating which goes first;
the fastest run of each is compared (outside load on a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRECISION = "auto"  # posttrain's default (fp32 on CPU); the bare trainers get the same (TRL's own default is bf16)
PROMPTS_PER_STEP, GROUP, MAX_TOKENS, TEMPERATURE, LR = 4, 4, 48, 0.7, 2e-5


# ---------------------------------------------------------------------------------------------------------------- GRPO
def grpo_posttrain(model: Path, work: Path, steps: int) -> dict[str, float]:
    from posttrain.rl.config import LogicTrackConfig
    from posttrain.stages.rl_logic import run_logic_track

    cfg = LogicTrackConfig.model_validate({
        "model": str(model), "output_dir": str(work / "posttrain_grpo"),
        "tasks": {"recipe": str(ROOT / "data_recipes/logic_easy_math.yaml")},
        "train": {"max_steps": steps, "prompts_per_step": PROMPTS_PER_STEP, "num_generations": GROUP,
                  "learning_rate": LR, "loss_type": "dapo", "beta": 0.0, "save_steps": 10_000, "report_to": [],
                  # bare TRL on model.generate has no sampler log-probs to correct with
                  "importance_sampling": {"correction": False}, "precision": PRECISION},
        "sampling": {"temperature": TEMPERATURE, "max_tokens": MAX_TOKENS},
        "agent": {"max_turns": 1}, "rewards": {"format_penalty": 0.0}, "verify": {"workers": 1},
        "rollout": {"engine": "hf", "resources": {"num_cpus": 2}},
    })
    start = time.perf_counter()
    manifest = run_logic_track(cfg, source="bench").manifest
    wall = time.perf_counter() - start
    history = [json.loads(line) for line in (work / "posttrain_grpo" / "metrics.jsonl").read_text().splitlines()]
    return grpo_numbers(manifest["metrics"]["duration_s"], wall, steps, history)


def grpo_bare(model: Path, work: Path, steps: int) -> dict[str, float]:
    import datasets
    import torch
    from math_verify import parse, verify
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from posttrain.data import build_dataset, load_built
    from posttrain.training.arguments import use_bf16

    build_dataset(ROOT / "data_recipes/logic_easy_math.yaml", work / "tasks")
    tasks = [json.loads(r["task"]) for r in load_built(work / "tasks").to_list()]
    dataset = datasets.Dataset.from_dict({
        "prompt": [[{"role": m["role"], "content": m["content"]} for m in t["messages"]] for t in tasks],
        "answer": [t["answer"] for t in tasks]})

    def correct(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        return [float(verify(parse(f"${gold}$"), parse(c[0]["content"])))
                for c, gold in zip(completions, answer, strict=True)]

    start = time.perf_counter()
    args = GRPOConfig(output_dir=str(work / "bare_grpo"), max_steps=steps, per_device_train_batch_size=PROMPTS_PER_STEP
                      * GROUP, num_generations=GROUP, learning_rate=LR, loss_type="dapo", beta=0.0,
                      temperature=TEMPERATURE, max_completion_length=MAX_TOKENS, logging_steps=1,
                      save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                      seed=0, bf16=use_bf16(PRECISION))
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                          reward_funcs=correct, args=args, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model))
    result = trainer.train()
    trainer.save_model(str(work / "bare_grpo" / "final"))
    wall = time.perf_counter() - start
    return grpo_numbers(result.metrics["train_runtime"], wall, steps, trainer.state.log_history)


def grpo_numbers(loop_s: float, wall_s: float, steps: int, history: list[dict[str, Any]]) -> dict[str, float]:
    lengths = [row["completions/mean_length"] for row in history if "completions/mean_length" in row]
    tokens = sum(lengths) * PROMPTS_PER_STEP * GROUP
    return {"loop_s": loop_s, "wall_s": wall_s, "steps_per_s": steps / loop_s, "tokens_per_s": tokens / loop_s,
            "mean_completion_tokens": sum(lengths) / max(len(lengths), 1)}


# ----------------------------------------------------------------------------------------------------------------- DPO
DPO_SETTINGS = {"max_steps": 8, "precision": PRECISION, "batch_size": 4, "learning_rate": 1e-6, "max_length": 384,
                "report_to": [], "save_steps": 10_000, "logging_steps": 1, "lr_scheduler": "linear",
                "warmup_ratio": 0.0}


def preference_pairs(work: Path) -> list[dict[str, Any]]:
    from posttrain.data import build_dataset, load_built

    build_dataset(ROOT / "data_recipes/preference_tiny.yaml", work / "pairs")
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in load_built(work / "pairs").to_list()]


def dpo_posttrain(model: Path, work: Path, steps: int) -> dict[str, float]:
    from posttrain.preference.dpo import DPOTrain, train_dpo
    from posttrain.report import Progress

    train = DPOTrain.model_validate({**DPO_SETTINGS, "max_steps": steps})
    pairs = preference_pairs(work)
    start = time.perf_counter()
    metrics, _, _ = train_dpo(model, model, pairs, [], train, work / "posttrain_dpo", resume=False,
                              progress=Progress("rl-chat", lambda event: None), round_=1)
    wall = time.perf_counter() - start
    return {"loop_s": metrics["duration_s"], "wall_s": wall, "steps_per_s": steps / metrics["duration_s"]}


def dpo_bare(model: Path, work: Path, steps: int) -> dict[str, float]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from posttrain.training.arguments import use_bf16

    s = DPO_SETTINGS
    dataset = datasets.Dataset.from_list(preference_pairs(work))
    start = time.perf_counter()
    args = DPOConfig(output_dir=str(work / "bare_dpo"), max_steps=steps, per_device_train_batch_size=s["batch_size"],
                     learning_rate=s["learning_rate"], lr_scheduler_type=s["lr_scheduler"], max_length=s["max_length"],
                     beta=0.1, loss_type=["sigmoid"], logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0, bf16=use_bf16(s["precision"]))
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                         ref_model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), args=args,
                         train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model))
    result = trainer.train()
    trainer.save_model(str(work / "bare_dpo" / "final"))
    wall = time.perf_counter() - start
    loop = result.metrics["train_runtime"]
    return {"loop_s": loop, "wall_s": wall, "steps_per_s": steps / loop}


# ---------------------------------------------------------------------------------------------------------------- main
def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the shortest training loop: on a shared machine, outside load only ever adds time."""
    return min(runs, key=lambda r: r["loop_s"])


def compare(name: str, ours: list[dict[str, float]], bare: list[dict[str, float]]) -> None:
    print(f"\n{name}: posttrain vs bare TRL, best of {len(ours)} runs each (ratio posttrain / TRL; target >= 0.9x)")
    print("  loop s per run: posttrain " + ", ".join(f"{r['loop_s']:.1f}" for r in ours)
          + "; TRL " + ", ".join(f"{r['loop_s']:.1f}" for r in bare))
    o, b = best(ours), best(bare)
    for key, label in [("steps_per_s", "steps/s (loop)"), ("tokens_per_s", "completion tokens/s (loop)"),
                       ("mean_completion_tokens", "mean completion tokens"), ("loop_s", "train loop s"),
                       ("wall_s", "wall s (load + start + train + save)")]:
        if key in o:
            ratio = o[key] / b[key] if b[key] else float("nan")
            print(f"  {label:38s} posttrain {o[key]:9.3f}   TRL {b[key]:9.3f}   ratio {ratio:5.2f}x")


def alternate(ours: Any, bare: Any, model: Path, work: Path, steps: int,
              repeats: int) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Run both sides ``repeats`` times, alternating which goes first, so that slow spells hit both alike."""
    our_runs, bare_runs = [], []
    for i in range(repeats):
        order = [(bare, bare_runs), (ours, our_runs)]
        for fn, runs in order if i % 2 == 0 else order[::-1]:
            runs.append(fn(model, work / f"{fn.__name__}_{i}", steps))
    return our_runs, bare_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a known model name, an HF folder, or 'tiny'")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the best of each is compared")
    parser.add_argument("--only", choices=["grpo", "dpo"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    if args.model == "tiny":
        from posttrain.models.tiny import make_tiny_model

        model = make_tiny_model(work / "tiny")
    else:
        from posttrain.models.loading import resolve_model

        model = resolve_model(args.model, key="--model")
    print(f"model {model}, {args.steps} steps per run, {args.repeats} runs per side, work dir {work}")
    if args.only in (None, "dpo"):
        compare("DPO", *alternate(dpo_posttrain, dpo_bare, model, work, args.steps, args.repeats))
    if args.only in (None, "grpo"):
        compare("GRPO", *alternate(grpo_posttrain, grpo_bare, model, work, args.steps, args.repeats))


if __name__ == "__main__":
    main()
