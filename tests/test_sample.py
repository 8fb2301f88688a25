"""`posttrain sample` end to end on the tiny model with a real vLLM CPU engine in a Ray worker (one pool for the
module), real environments (math, tool_calling, and a plugin env whose verdict the test controls) and real verifier
pools: only verified passes are kept, the output is the chat-dataset contract, the manifest's numbers match the
shards, and a re-run with another selection policy reuses every shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.environment import Trajectory, make_env
from posttrain.rejection.metrics import pass_at_k
from posttrain.rejection.output import chat_row

MAX_LEN = 512

# A plugin environment whose verdict the test can recompute: a reply passes when the first byte of its sha256 is
# even (about half of random replies), and its score is a second, independent function of the same hash.
PARITY_ENV = '''
import hashlib
from posttrain.environment import Environment, StepResult, Trajectory, VerifyResult


class ParityEnv(Environment):
    name = "parity"

    def reset(self, task):
        self.task = task
        return [dict(m) for m in task["messages"]], []

    def step(self, assistant_message):
        return StepResult(done=True)

    def verify(self, trajectory):
        digest = hashlib.sha256(trajectory.final_answer.encode()).digest()
        passed = digest[0] % 2 == 0
        return VerifyResult(passed=passed, score=(digest[1] % 5) / 4, reasons=[] if passed else ["odd_digest"])

    def generate_tasks(self, n, seed):
        for i in range(n):
            yield {"id": f"parity-{seed}-{i}", "env": __file__, "tools": [],
                   "messages": [{"role": "user", "content": f"Tell me something about the number {seed * 1000 + i}."}]}
'''


def write_parity_tasks(folder: Path, n: int, seed: int = 0, extra: list[dict] | None = None) -> Path:
    """The parity env plugin, ``n`` of its tasks (+ ``extra`` task records) and a task recipe; returns the recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    env_file = folder / "parity_env.py"
    env_file.write_text(PARITY_ENV)
    tasks = list(make_env(str(env_file)).generate_tasks(n, seed)) + list(extra or [])
    (folder / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    recipe = folder / "tasks.yaml"
    recipe.write_text("kind: task\nbuckets:\n  parity:\n    sources: [{path: tasks.jsonl}]\n")
    return recipe


def base_overrides(model: Path, out: Path, recipe: Path, engine: str) -> list[str]:
    return [f"model={model}", f"output_dir={out}", f"tasks.recipe={recipe}", f"rollout.engine={engine}",
            "rollout.resources.num_cpus=0.5", f"rollout.engine_kwargs={{dtype: float32, max_model_len: {MAX_LEN}}}",
            # random weights rarely end a turn: stopping at the letter "e" gives short, finished replies
            "sampling={n: 3, temperature: 1.0, max_tokens: 24, stop: [e]}", "verify.workers=1", "batch_size=4"]


@pytest.fixture(scope="module")
def vllm_pool(tiny_model_dir, tmp_path_factory):
    from posttrain.rollout.pool import RolloutPool

    root = tmp_path_factory.mktemp("vllm")
    with pytest.MonkeyPatch.context() as mp:  # vLLM's caches in a temp dir (Ray workers inherit the environment)
        mp.setenv("VLLM_CACHE_ROOT", str(root / "cache"))
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
        pool = RolloutPool(tiny_model_dir, engine="vllm", resources={"num_cpus": 0.5},
                           engine_kwargs={"dtype": "float32", "max_model_len": MAX_LEN, "kv_cache_gib": 0.25})
        yield pool
        pool.shutdown()


def _shard_prompts(out: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted((out / "shards").glob("batch_*.jsonl"))
            for line in shard.read_text().splitlines()]


def test_sample_keeps_only_verified_passes_in_the_chat_contract(vllm_pool, tiny_model_dir, tmp_path) -> None:
    from posttrain.data import load_built
    from posttrain.stages.sample import SampleConfig, run_sample

    math_tasks = list(make_env("math").generate_tasks(3, 7))
    tool_tasks = list(make_env("tool_calling").generate_tasks(2, 7))
    recipe = write_parity_tasks(tmp_path / "tasks", 10, extra=math_tasks + tool_tasks)
    out = tmp_path / "out"
    # math-verify gets slack for a loaded machine: a timeout is a failure that the re-check below might not repeat
    overrides = [*base_overrides(tiny_model_dir, out, recipe, "vllm"), "agent.max_turns=2",
                 "envs={math: {timeout: 60}}"]
    cfg = load_config(SampleConfig, None, overrides)
    manifest = run_sample(cfg, pool=vllm_pool).manifest

    prompts = _shard_prompts(out)
    assert sorted(p["index"] for p in prompts) == list(range(15))  # every prompt once
    assert all(len(p["samples"]) == 3 for p in prompts)
    assert manifest["metrics"]["batches"] == {"total": 5, "from_earlier_run": 0, "generated": 5}

    # Every verdict recorded in the shards is what a fresh environment says about that trajectory.
    tasks = {t["id"]: t for t in [*math_tasks, *tool_tasks]}
    parity = make_env(str(tmp_path / "tasks" / "parity_env.py"))
    for p in prompts:
        env = parity if p["env"].endswith("parity_env.py") else make_env(p["env"], **cfg.envs.get(p["env"], {}))
        task = tasks.get(p["task_id"]) or {"id": p["task_id"]}
        for s in p["samples"]:
            assert s["messages"][0]["role"] in ("user", "system") and s["messages"][-1]["role"] != "system"
            assert env.verify(Trajectory(task, s["messages"])).passed == s["passed"]

    # The dataset is exactly the distinct, finished passes (all_distinct), as chat rows.
    expected = {}
    for p in prompts:
        seen = set()
        for s in p["samples"]:
            key = json.dumps(s["messages"][s["prompt_messages"]:])
            if s["passed"] and not s["truncated"] and key not in seen:
                seen.add(key)
                expected[chat_row(p, s)["id"]] = (p, s)
    data = load_built(out)
    assert data.column_names == ["id", "bucket", "source", "messages", "tools"]
    assert sorted(data["id"]) == sorted(expected) and len(expected) > 0
    for row in data:
        p, s = expected[row["id"]]
        assert row["messages"] == [{"role": m["role"], "content": m["content"]} for m in s["messages"]]
        assert row["bucket"] == "parity" and row["source"] == "tasks.jsonl" and row["tools"] == ""
        assert parity.verify(Trajectory({"id": p["task_id"]}, row["messages"])).passed  # re-verifies as passed

    # The manifest's numbers are the shards' numbers.
    m = manifest["metrics"]
    assert manifest["stage"] == "sample" and manifest["kind"] == "chat" and m["rows"] == len(expected)
    b = m["buckets"]["parity"]
    assert b["prompts"] == 15 and b["samples"] == 45 and b["kept"] == len(expected)
    assert b["passed"] == sum(s["passed"] for p in prompts for s in p["samples"])
    counts = [(len(p["samples"]), sum(s["passed"] for s in p["samples"])) for p in prompts]
    assert b["pass@1"] == pytest.approx(sum(pass_at_k(n, c, 1) for n, c in counts) / 15, abs=1e-6)
    assert b["pass@3"] == pytest.approx(sum(pass_at_k(n, c, 3) for n, c in counts) / 15, abs=1e-6)
    reasons = b["rejection_reasons"]
    assert reasons["odd_digest"] == sum(not s["passed"] for p in prompts if p["env"].endswith(".py")
                                        for s in p["samples"])
    assert set(reasons) - {"odd_digest"} and set(reasons) <= {"odd_digest", "no_answer", "wrong_answer", "incomplete",
                                                               "turn_limit", "format_error", "missing_fact",
                                                               "state_mismatch", "unexpected_call", "unknown_tool",
                                                               "invalid_arguments"}
    assert b["kept_tokens"] == sum(expected[i][1]["model_tokens"] for i in expected)
    assert any(k.startswith("model:") for k in manifest["inputs"]) and "tasks:data.parquet" in manifest["inputs"]
    assert m["timing"]["wall_s"] > 0 and m["rollout_restarts"] == 0

    # Another selection policy re-uses every shard (nothing is generated again) and keeps at most one per prompt.
    shortest = run_sample(load_config(SampleConfig, None, [*overrides, "selection.policy=shortest"]),
                          pool=vllm_pool).manifest
    assert shortest["metrics"]["batches"]["generated"] == 0 and shortest["metrics"]["timing"] == {}
    assert 0 < shortest["metrics"]["rows"] == sum(
        any(s["passed"] and not s["truncated"] for s in p["samples"]) for p in prompts)
    kept_tokens = sum(min(s["model_tokens"] for s in p["samples"] if s["passed"] and not s["truncated"])
                      for p in prompts if any(s["passed"] and not s["truncated"] for s in p["samples"]))
    assert shortest["metrics"]["total"]["kept_tokens"] == kept_tokens
