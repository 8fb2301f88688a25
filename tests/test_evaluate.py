"""`posttrain eval` end to end: three tiny models (two of one architecture, one of another) on a task set that mixes
the real math environment with a plugin environment whose verdict the test can recompute, real transformers rollout
workers under local Ray, real verifier pools, and a tiny reward model for the chat win rate.

Checked against independent recomputation: every verdict is what a fresh environment says about the sample, each
model's accuracy and pass@k are what the samples give, greedy answers of a model loaded by weight update equal a fresh
engine's, and the win rates are what the reward model's own scores of the answers give.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.environment import Trajectory, make_env
from posttrain.preference.winrate import win_rate
from posttrain.rejection.metrics import pass_at_k
from posttrain.stages.eval import EvalConfig, run_eval

ROOT = Path(__file__).resolve().parent.parent
PREFERENCE_TINY = ROOT / "data_recipes/preference_tiny.yaml"
MAX_LEN = 512

# Passes when the first byte of the reply's sha256 is even: about half of random replies, recomputable here.
HASH_ENV = '''
import hashlib
from posttrain.environment import Environment, StepResult, VerifyResult


class HashEnv(Environment):
    name = "hash_parity"

    def reset(self, task):
        return [dict(m) for m in task["messages"]], []

    def step(self, assistant_message):
        return StepResult(done=True)

    def verify(self, trajectory):
        passed = hashlib.sha256(trajectory.final_answer.encode()).digest()[0] % 2 == 0
        return VerifyResult(passed=passed, score=float(passed), reasons=[] if passed else ["odd_hash"])

    def generate_tasks(self, n, seed):
        for i in range(n):
            yield {"id": f"hash-{seed}-{i}", "env": __file__, "tools": [],
                   "messages": [{"role": "user", "content": f"Say something about {seed * 100 + i}."}]}
'''


@pytest.fixture(scope="module")
def tiny_models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sft (seed 0), chat (seed 1: same architecture, other weights) and small (one layer: another architecture)."""
    import torch
    from transformers import AutoModelForCausalLM

    from posttrain.models.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("eval_models")
    other = make_tiny_model(root / "seed1", seed=1)
    # Random tiny models give near-uniform next-token distributions, so two of them sampled with the same seeds
    # often write the same text. Larger embeddings (tied with the head) make this one's distributions peaked:
    # its answers then show which weights the workers hold.
    sharp = AutoModelForCausalLM.from_pretrained(other, dtype=torch.float32)
    with torch.no_grad():
        sharp.get_input_embeddings().weight.mul_(6.0)
    sharp.save_pretrained(other)
    small = root / "one_layer"
    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, num_hidden_layers=1)
    model.save_pretrained(small)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, small / f.name)
    return {"sft": tiny_model_dir, "chat": other, "small": small}


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-label sequence classifier on the tiny model (untrained head, seeded): a real, deterministic scorer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("eval_rm") / "rm"
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def task_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval_tasks")
    (folder / "hash_env.py").write_text(HASH_ENV)
    hashed = list(make_env(str(folder / "hash_env.py")).generate_tasks(6, 0))
    math = list(make_env("math").generate_tasks(3, 5))
    for name, tasks in (("hash.jsonl", hashed), ("math.jsonl", math)):
        (folder / name).write_text("".join(json.dumps(t) + "\n" for t in tasks))
    recipe = folder / "tasks.yaml"
    recipe.write_text("kind: task\nbuckets:\n  hash:\n    sources: [{path: hash.jsonl}]\n    share: {count: 6}\n"
                      "  math:\n    sources: [{path: math.jsonl}]\n    share: {count: 3}\n")
    return recipe


@pytest.fixture(scope="module")
def workers(tiny_model_dir: Path):
    """Running rollout workers (transformers engine, local Ray) handed to the eval: it loads each compatible model's
    weights into them and starts its own pool for a model of another architecture."""
    import ray

    from posttrain.rollout.pool import RolloutPool

    started_here = not ray.is_initialized()
    pool = RolloutPool(tiny_model_dir, engine="hf", resources={"num_cpus": 0.5},
                       engine_kwargs={"dtype": "float32", "max_model_len": MAX_LEN})
    yield pool
    pool.shutdown()
    if started_here:
        ray.shutdown()


def eval_overrides(models: dict[str, Path], out: Path, recipe: Path, rm: Path) -> list[str]:
    return [
        f"models={json.dumps({k: str(v) for k, v in models.items()})}", f"output_dir={out}",
        f"sets={{heldout: {{recipe: {recipe}}}}}",
        # Random weights answer greedily with the same newlines whatever the seed: sampled answers (accuracy as
        # pass@1) tell the models apart. Stopping at the letter "e" gives short, finished replies.
        "sampling={temperature: 1.0, max_tokens: 16, stop: [e]}",
        "pass_at_k={n: 4, k: [1, 2, 4], sampling: {temperature: 1.0, max_tokens: 16, stop: [e]}}",
        f"chat={{prompts: {PREFERENCE_TINY}, reference: sft, scorer: {{reward_model: {rm}}}, limit: 6, "
        "sampling: {temperature: 1.0, max_tokens: 16}}",
        "rollout.engine=hf", "rollout.resources.num_cpus=0.5",
        f"rollout.engine_kwargs={{dtype: float32, max_model_len: {MAX_LEN}}}", "verify.workers=1", "batch_size=8",
    ]


@pytest.fixture(scope="module")
def evaluated(tiny_models, reward_model, task_recipe, workers, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    out = tmp_path_factory.mktemp("eval") / "out"
    overrides = eval_overrides(tiny_models, out, task_recipe, reward_model)
    manifest = run_eval(load_config(EvalConfig, None, overrides), workers=workers).manifest
    return out, manifest, overrides


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_every_verdict_and_metric_matches_a_recomputation(evaluated, task_recipe) -> None:
    out, manifest, _ = evaluated
    samples = _samples(out)
    tasks = [json.loads(line) for name in ("hash.jsonl", "math.jsonl")
             for line in (task_recipe.parent / name).read_text().splitlines()]
    by_id = {t["id"]: t for t in tasks}
    hash_env, math_env = make_env(str(task_recipe.parent / "hash_env.py")), make_env("math")

    task_samples = [s for s in samples if s["kind"] == "task"]
    # 9 prompts x (1 greedy + 4 sampled) x 3 models, every prompt of every model once per mode
    assert len(task_samples) == 9 * 5 * 3
    for s in task_samples:
        env = math_env if s["env"] == "math" else hash_env
        assert env.verify(Trajectory(by_id[s["task_id"]], s["messages"])).passed == s["passed"]
        assert s["response"] == Trajectory(by_id[s["task_id"]], s["messages"]).final_answer
    assert {s["bucket"] for s in task_samples} == {"hash", "math"}
    assert any(s["passed"] for s in task_samples) and not all(s["passed"] for s in task_samples)
    assert all("wrong_answer" in s["reasons"] or "no_answer" in s["reasons"]
               for s in task_samples if s["env"] == "math" and not s["passed"])

    results = manifest["metrics"]["models"]
    for name in ("sft", "chat", "small"):
        mine = [s for s in task_samples if s["model"] == name]
        heldout = results[name]["sets"]["heldout"]
        for bucket in ("hash", "math"):
            greedy = [s["passed"] for s in mine if s["bucket"] == bucket and s["mode"] == "accuracy"]
            assert heldout["buckets"][bucket]["accuracy"] == pytest.approx(sum(greedy) / len(greedy), abs=1e-6)
            counts = {}
            for s in mine:
                if s["bucket"] == bucket and s["mode"] == "pass@k":
                    counts.setdefault(s["task_id"], []).append(s["passed"])
            assert all(len(c) == 4 for c in counts.values())
            for k in (1, 2, 4):
                expected = sum(pass_at_k(4, sum(c), k) for c in counts.values()) / len(counts)
                assert heldout["buckets"][bucket]["pass@k"][f"pass@{k}"] == pytest.approx(expected, abs=1e-6)
        greedy = [s["passed"] for s in mine if s["mode"] == "accuracy"]
        assert heldout["all"]["accuracy"] == pytest.approx(sum(greedy) / 9, abs=1e-6)
        assert heldout["all"]["prompts"] == 9


def test_one_pool_per_architecture_and_weight_updates_are_the_real_model(evaluated, tiny_models,
                                                                        task_recipe) -> None:
    from posttrain.data import load_built
    from posttrain.rollout.agent_loop import run_episodes
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.rollout.sampling import SamplingParams
    from posttrain.tasks import TasksConfig, load_tasks, make_batches, row_seed

    out, manifest, _ = evaluated
    results = manifest["metrics"]["models"]
    # sft and chat go into the caller's running workers by weight update; small needs workers of its own
    assert {n: r["loaded"] for n, r in results.items()} == {"sft": "weights", "chat": "weights", "small": "started"}
    assert load_built(out / "sets" / "heldout").num_rows == 9

    # The chat model's answers (its weights loaded into running workers) are what a fresh engine built from the chat
    # folder answers with the same seeds, batch for batch (one thread, as in the worker), greedy-or-sampled answers and
    # pass@k samples alike; and they are not the sft model's answers.
    import torch

    from posttrain.stages.eval import PASS_AT_K_SEED

    rows, _ = load_tasks(TasksConfig(recipe=str(task_recipe)), out / "check", key="check")
    modes = {"accuracy": (SamplingParams(temperature=1.0, max_tokens=16, stop=["e"]), 0),
             "pass@k": (SamplingParams(n=4, temperature=1.0, max_tokens=16, stop=["e"]), PASS_AT_K_SEED)}
    threads = torch.get_num_threads()
    try:
        engine = HFEngine(tiny_models["chat"], dtype="float32", max_model_len=MAX_LEN, num_threads=1)
        answers = {}
        for mode, (sampling, seed) in modes.items():
            for batch in make_batches(rows, 8):
                params = [sampling.with_updates(seed=row_seed(seed, row)) for row in batch.rows]
                episodes = run_episodes(engine, batch.env, [r.task for r in batch.rows], params)
                answers.update(((mode, ep.task["id"], ep.sample_index), ep.trajectory.final_answer) for ep in episodes)
    finally:
        torch.set_num_threads(threads)
    samples = [s for s in _samples(out) if s["kind"] == "task"]
    chat = {(s["mode"], s["task_id"], s["sample_index"]): s["response"] for s in samples if s["model"] == "chat"}
    sft = {(s["mode"], s["task_id"], s["sample_index"]): s["response"] for s in samples if s["model"] == "sft"}
    assert len(answers) == 9 * 5 and chat == answers
    assert sum(chat[k] != sft[k] for k in chat) >= 10


def test_win_rate_is_what_the_reward_model_says(evaluated, reward_model) -> None:
    from posttrain.preference.scorers import RewardModelScorer

    out, manifest, _ = evaluated
    chat = [s for s in _samples(out) if s["kind"] == "chat"]
    assert len(chat) == 6 * 3
    scorer = RewardModelScorer(reward_model)
    for s in chat:  # scores recomputed by a fresh scorer
        assert s["score"] == pytest.approx(scorer.score([s["prompt"]], [s["response"]])[0], abs=1e-4)
    results = manifest["metrics"]["models"]
    reference = {s["task_id"]: s["score"] for s in chat if s["model"] == "sft"}
    for name in ("sft", "chat", "small"):
        mine = [s for s in chat if s["model"] == name]
        expected = win_rate([s["score"] for s in mine], [reference[s["task_id"]] for s in mine])
        got = results[name]["chat"]
        assert (got["wins"], got["ties"], got["losses"]) == (expected.wins, expected.ties, expected.losses)
        assert got["rate"] == pytest.approx(expected.rate)
        assert got["mean_score"] == pytest.approx(sum(s["score"] for s in mine) / 6, abs=1e-5)
    assert results["sft"]["chat"]["ties"] == 6 and results["sft"]["chat"]["rate"] == 0.5  # against itself
    assert manifest["metrics"]["chat"]["compared"] == 6


def test_outputs_table_and_manifest(evaluated, tiny_models, reward_model) -> None:
    from posttrain.stages.sample import model_sha256

    out, manifest, _ = evaluated
    results = json.loads((out / "results.json").read_text())
    assert results == manifest["metrics"]
    md = (out / "results.md").read_text()
    header, rule, *lines = [line for line in md.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:4] == ["model", "heldout acc", "heldout pass@1", "heldout pass@2"]
    assert {"heldout/hash acc", "heldout/math pass@4", "win rate", "reward"} <= set(columns)
    assert [line.split("|")[1].strip() for line in lines] == ["sft", "chat", "small"]
    for line, name in zip(lines, ("sft", "chat", "small"), strict=True):
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        sets = results["models"][name]["sets"]["heldout"]
        assert cells["heldout acc"] == f"{sets['all']['accuracy']:.3f}"
        assert cells["heldout/math pass@4"] == f"{sets['buckets']['math']['pass@k']['pass@4']:.3f}"
        assert cells["win rate"] == f"{results['models'][name]['chat']['rate']:.3f}"
    assert "against `sft`" in md and "n=4" in md

    inputs = manifest["inputs"]
    assert inputs["model:chat"] == model_sha256(tiny_models["chat"])
    assert inputs["reward_model"] == model_sha256(reward_model)
    assert "sets.heldout:data.parquet" in inputs and "chat:data.parquet" in inputs
    assert manifest["stage"] == "eval" and "torch" in manifest["versions"]
    assert set(manifest["outputs"]) == {"results.json", "results.md", "samples.jsonl"}


def test_rerun_is_a_no_op_and_a_new_model_reuses_the_others(evaluated, tiny_model_dir, workers) -> None:
    out, manifest, overrides = evaluated
    again = run_eval(load_config(EvalConfig, None, overrides), workers=workers).manifest
    assert again == manifest  # nothing generated: the stored manifest comes back

    models = json.loads(overrides[0].partition("=")[2])
    models["sft_copy"] = str(tiny_model_dir)  # the same folder under another name: a part of its own
    bigger = load_config(EvalConfig, None, [*overrides, f"models={json.dumps(models)}"])
    result = run_eval(bigger, workers=workers).metrics["models"]
    assert {n: r["loaded"] for n, r in result.items()} == {
        "sft": "earlier run", "chat": "earlier run", "small": "earlier run", "sft_copy": "weights"}
    assert result["sft_copy"]["sets"] == result["sft"]["sets"]  # greedy + the same seeds: the same numbers
    assert result["sft_copy"]["chat"]["rate"] == 0.5
