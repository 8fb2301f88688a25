"""Users' own tasks through the real stages, on the tiny model with one transformers rollout pool under local Ray:
one rejection-sampling round (sample -> verify -> SFT), a few Logic-track (GRPO) steps and an eval, on tasks from
every new source at once:

* your own tool domain (examples/tools/library.py, named in the tasks' ``domain_modules``),
* your MCP server (examples/mcp/notes_server.py, started per episode),
* static tool-call data (xLAM rows -> tool_call_match),
* instruction following (IFEval rows),
* task files in well-known shapes (GSM8K, MATH, MBPP rows -> math and code),
* your reward function (TRL's signature, from a file), combined with the env rewards,
* and, in the eval, a chat judge behind an OpenAI-compatible endpoint (a small HTTP server started here).

A random tiny model solves almost nothing, so the rs round also samples tasks of a plugin environment that passes
about half of random replies: the round then has verified samples to fine-tune on. What is checked for the new
sources is that every episode ran and every verdict came from its own environment's verifier (no episode or
verification error), and that the reward function scored each of them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_sample import write_parity_tasks

from posttrain.config import load_config, validate
from posttrain.environment import make_env

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "data_recipes" / "samples" / "shapes"
MAX_LEN = 2048
REWARD = '''
def brevity(completions, **kwargs):
    """A TRL-style reward: shorter model text is better (0..1)."""
    return [1.0 / (1.0 + sum(len(m["content"]) for m in c if m["role"] == "assistant") / 100) for c in completions]
'''
SHAPE_ROWS = {"xlam": 1, "ifeval": 1, "gsm8k": 1, "math_boxed": 1, "mbpp": 1}


def _library_tasks(n: int) -> list[dict]:
    library = ROOT / "examples" / "tools" / "library.py"
    tasks = [t for t in make_env(str(library)).generate_tasks(10, 3) if t["kind"] != "impossible"][:n]
    return [{**t, "domain_modules": [str(library)]} for t in tasks]  # absolute: any process, any folder


def _mcp_tasks(n: int) -> list[dict]:
    tasks = [json.loads(line) for line in (ROOT / "examples/mcp/notes_tasks.jsonl").read_text().splitlines()][:n]
    for t in tasks:
        server = t["mcp_servers"]["notes"]
        server["args"][0] = str(ROOT / server["args"][0])
        if "function" in t["check"]:
            t["check"]["function"] = str(ROOT / t["check"]["function"])
    return tasks


def write_recipe(folder: Path, parity: int, per_source: int = 1) -> Path:
    """A task recipe with one bucket per new source (+ ``parity`` plugin-env tasks); returns the recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    buckets = {"library": ("task", _library_tasks(per_source)), "mcp": ("task", _mcp_tasks(per_source))}
    for shape, n in SHAPE_ROWS.items():
        rows = [json.loads(line) for line in (SHAPES / f"{shape}.jsonl").read_text().splitlines()][:n * per_source]
        buckets[shape] = (shape, rows)
    lines = ["kind: task", "buckets:"]
    for name, (fmt, rows) in buckets.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        lines += [f"  {name}:", f"    sources: [{{path: {name}.jsonl, format: {fmt}}}]"]
    if parity:
        parity_recipe = write_parity_tasks(folder / "parity", parity)
        lines += ["  parity:", f"    sources: [{{path: {parity_recipe.parent / 'tasks.jsonl'}}}]"]
    (folder / "tasks.yaml").write_text("\n".join(lines) + "\n")
    return folder / "tasks.yaml"


@pytest.fixture(scope="module")
def pool(tiny_model_dir):
    from posttrain.rollout.pool import RolloutPool

    pool = RolloutPool(tiny_model_dir, engine="hf", resources={"num_cpus": 1},
                       engine_kwargs={"dtype": "float32", "max_model_len": MAX_LEN})
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("rewards") / "my_rewards.py"
    path.write_text(REWARD)
    return str(path)


NEW_ENVS = {"tool_calling", "mcp", "tool_call_match", "instruction_following", "math", "code"}


def test_one_rejection_sampling_round_on_every_new_source(pool, tiny_model_dir, reward_file, tmp_path) -> None:
    from posttrain.stages.rs import RSConfig, run_rs

    recipe = write_recipe(tmp_path / "tasks", parity=6)
    heldout = write_parity_tasks(tmp_path / "heldout", 2, seed=9)
    out = tmp_path / "rs"
    cfg = load_config(RSConfig, None, [
        f"model={tiny_model_dir}", f"output_dir={out}", "rounds=1",
        f"sample.tasks.recipe={recipe}", "sample.sampling={n: 2, temperature: 1.0, max_tokens: 16, stop: [e]}",
        "sample.agent.max_turns=2", "sample.verify={workers: 2, timeout_s: 120}", "sample.batch_size=4",
        f"sample.rewards={{functions: [{{function: '{reward_file}:brevity', weight: 0.5}}]}}",
        f"heldout.tasks.recipe={heldout}", "heldout.sampling={n: 1, temperature: 1.0, max_tokens: 8, stop: [e]}",
        "sft.train={max_steps: 1, batch_size: 2, max_length: 1024, save_steps: 100, report_to: []}",
        "rollout.engine=hf", f"rollout.engine_kwargs={{dtype: float32, max_model_len: {MAX_LEN}}}"])
    manifest = run_rs(cfg, pool=pool).manifest

    rounds = manifest["metrics"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["sft"]["steps"] == 1  # it fine-tuned on its passes
    data = json.loads((out / "round_1" / "data" / "manifest.json").read_text())
    samples = [s | {"env": rec["env"], "bucket": rec["bucket"]}
               for shard in sorted((out / "round_1" / "data" / "shards").glob("batch_*.jsonl"))
               for rec in map(json.loads, shard.read_text().splitlines()) for s in rec["samples"]]
    assert {s["env"] for s in samples} >= NEW_ENVS
    assert {s["bucket"] for s in samples} == {"library", "mcp", *SHAPE_ROWS, "parity"}
    for s in samples:
        assert s["end_reason"] != "env_error" and s["error"] is None, s  # played and verified by its env
        assert s["passed"] or s["reasons"], s
        assert 0.0 < s["rewards"]["brevity"] <= 1.0
        assert s["reward"] == pytest.approx(s["score"] + 0.5 * s["rewards"]["brevity"], abs=1e-6)
    assert data["metrics"]["reward_functions"] == {"brevity": {"errors": 0, "first_error": ""}}
    assert any(f"reward:{reward_file}:brevity" == k for k in data["inputs"])


def test_a_few_logic_track_steps_on_every_new_source(pool, tiny_model_dir, reward_file, tmp_path) -> None:
    from posttrain.rl.config import LogicTrackConfig
    from posttrain.stages.rl_logic import run_logic_track

    recipe = write_recipe(tmp_path / "tasks", parity=1)  # 8 rows: library, mcp, five shapes, one parity
    config = validate(LogicTrackConfig, {
        "model": str(tiny_model_dir), "output_dir": str(tmp_path / "logic"), "tasks": {"recipe": str(recipe)},
        "train": {"max_steps": 2, "prompts_per_step": 4, "num_generations": 2, "learning_rate": 1e-2,
                  "report_to": [], "save_steps": 100},
        "sampling": {"max_tokens": 8}, "agent": {"max_turns": 2}, "verify": {"workers": 2, "timeout_s": 120},
        "rewards": {"functions": [{"function": f"{reward_file}:brevity", "weight": 0.2}]},
    }, "test")
    manifest = run_logic_track(config, pool=pool).manifest
    assert manifest["metrics"]["steps"] == 2 and manifest["metrics"]["tasks"] == 8
    logged = [json.loads(line) for line in (tmp_path / "logic" / "metrics.jsonl").read_text().splitlines()]
    seen = {k for r in logged if "reward" in r for k, v in r.items() if v is not None}
    # two steps of four prompts are one epoch of the eight rows: every source was rewarded by its own environment
    assert {f"rewards/{env}/mean" for env in NEW_ENVS} | {"rewards/brevity/mean", "rewards/format/mean"} <= seen
    errors = [r["rewards/brevity/errors"] for r in logged if "rewards/brevity/errors" in r]
    assert errors and all(e == 0 for e in errors)


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint serving model "judge" that rates every reply 7."""

    def log_message(self, *args) -> None:
        return None

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "judge", "object": "model", "owned_by": "test"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                                                "content": "7"}}]})


def test_eval_with_a_reward_function_and_an_endpoint_judge(pool, tiny_model_dir, reward_file, tmp_path) -> None:
    from posttrain.stages.eval import EvalConfig, run_eval

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        recipe = write_recipe(tmp_path / "tasks", parity=0)
        cfg = load_config(EvalConfig, None, [
            f"models={{start: {tiny_model_dir}}}", f"output_dir={tmp_path / 'eval'}",
            f"sets={{mixed: {{recipe: {recipe}}}}}", "sampling={temperature: 1.0, max_tokens: 8, stop: [e]}",
            "agent.max_turns=2", "verify={workers: 2, timeout_s: 120}",
            f"rewards={{functions: [{{function: '{reward_file}:brevity'}}]}}",
            f"chat={{prompts: {ROOT / 'data_recipes/preference_tiny.yaml'}, reference: start, limit: 3, "
            f"scorer: {{kind: judge, judge_model: judge, judge_base_url: 'http://127.0.0.1:{server.server_port}/v1'}},"
            " sampling: {temperature: 1.0, max_tokens: 8}}",
            "rollout.engine=hf", f"rollout.engine_kwargs={{dtype: float32, max_model_len: {MAX_LEN}}}"])
        manifest = run_eval(cfg, workers=pool).manifest
    finally:
        server.shutdown()
        server.server_close()
    result = manifest["metrics"]["models"]["start"]
    assert "reward" in result["sets"]["mixed"]["all"] and result["chat"]["mean_score"] == 7.0
    assert manifest["metrics"]["chat"]["scorer"]["judged"] >= 3
    assert "mixed reward" in manifest["metrics"]["columns"]
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    tasks = [s for s in samples if s["kind"] == "task"]
    assert {s["env"] for s in tasks} == NEW_ENVS and all(s["error"] is None for s in tasks)
    assert all(s["rewards"]["brevity"] > 0 for s in tasks)
