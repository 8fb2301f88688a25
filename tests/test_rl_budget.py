"""RL that fits real budgets: LoRA in the Logic track with the adapter (or merged weights) pushed to the rollout
workers, rollouts running ahead of training with exact policy-version accounting, dynamic sampling, and LoRA in the
reward model and the Chat track. Real TRL trainers on the tiny model, real Ray rollout workers (the transformers
engine, and vLLM's LoRA support for the adapter push), the real verifier pools.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_rl_logic import DIGITS_ENV, ECHO_ENV, base_config, plugin_tasks, read_jsonl, task_dataset

from posttrain.errors import UserError

MAX_LEN = 2048
ROOT = Path(__file__).resolve().parent.parent
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
HF_ROLLOUT = {"engine": "hf", "resources": {"num_cpus": 1},
              "engine_kwargs": {"dtype": "float32", "max_model_len": MAX_LEN}}


@pytest.fixture(scope="module")
def envs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("envs")
    (root / "digits_env.py").write_text(DIGITS_ENV)
    (root / "echo_env.py").write_text(ECHO_ENV)
    return {"digits": str(root / "digits_env.py"), "echo": str(root / "echo_env.py")}


@pytest.fixture(scope="module")
def pool(tiny_model_dir):
    from posttrain.rollout.pool import RolloutPool

    pool = RolloutPool(tiny_model_dir, **{k: v for k, v in HF_ROLLOUT.items()})
    yield pool
    pool.shutdown()


def greedy(generator, tokenizer, n: int = 6):
    from posttrain.rollout.sampling import SamplingParams

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write some numbers."}],
                                           add_generation_prompt=True, tokenize=False)
    ids = [tokenizer.encode(prompt, add_special_tokens=False)]
    return generator.generate(ids, SamplingParams(temperature=0.0, max_tokens=n))[0][0]


# ------------------------------------------------------------------------------------------------------------- LoRA
@pytest.mark.parametrize("push", ["adapter", "merged"])
def test_a_lora_policy_reaches_the_workers_as_trained(push, pool, envs, tiny_model_dir, built_dataset_writer,
                                                      tmp_path) -> None:
    """Three GRPO steps of a LoRA policy; after the last push the workers serve exactly the trained policy (greedy
    tokens and log-probs equal the saved merged model's), and an adapter push moves a few KB, not the model."""
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.stages.rl_logic import run_logic_track

    config = base_config(tiny_model_dir, tmp_path / "out",
                         task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(envs["digits"], 8, 0)),
                         lora=LORA, weight_push=push, train={"max_steps": 3, "learning_rate": 5e-2})
    events: list[dict] = []
    done = run_logic_track(config, progress=events.append, pool=pool)
    sync = done.metrics["weight_sync"]
    assert sync["mode"] == push and sync["pushes"] == 4  # at the start and after each step
    full_bytes = sum(p.stat().st_size for p in Path(tiny_model_dir).glob("*.safetensors"))
    if push == "adapter":
        assert sync["bytes"] < full_bytes / 20  # only the adapter travelled (the workers held the base already)
    else:
        assert sync["bytes"] > 3 * full_bytes  # four full models
    assert any("the LoRA adapter only" in e["message"] if push == "adapter" else "merged weights" in e["message"]
               for e in events)
    out = done.output_dir
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()  # merge: true
    served = greedy(pool, pool.tokenizer)
    trained = greedy(HFEngine(out, dtype="float32", max_model_len=MAX_LEN), pool.tokenizer)
    start = greedy(HFEngine(tiny_model_dir, dtype="float32", max_model_len=MAX_LEN), pool.tokenizer)
    assert served.token_ids == trained.token_ids
    assert max(abs(a - b) for a, b in zip(served.logprobs, trained.logprobs, strict=True)) < 1e-4
    assert max(abs(a - b) for a, b in zip(trained.logprobs, start.logprobs, strict=False)) > 1e-4  # it did train


def test_vllm_serves_a_pushed_adapter_as_the_merged_model(tiny_model_dir, tmp_path) -> None:
    """vLLM's own LoRA support, through a rollout worker: an adapter pushed at run time gives the greedy tokens and
    log-probs of the model with that adapter merged in (checked against the transformers engine)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from posttrain.rl.weight_sync import adapter_tensors
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.rollout.pool import RolloutPool

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # random B: the adapter changes outputs
    tensors, config = adapter_tensors(peft_model)
    merged_dir = tmp_path / "merged"
    peft_model.merge_and_unload().save_pretrained(merged_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (Path(tiny_model_dir) / name).is_file():
            (merged_dir / name).write_bytes((Path(tiny_model_dir) / name).read_bytes())

    pool = RolloutPool(tiny_model_dir, engine="vllm", resources={"num_cpus": 1},
                       engine_kwargs={"dtype": "float32", "max_model_len": 512, "enable_lora": True,
                                      "max_lora_rank": 8})
    try:
        before = greedy(pool, pool.tokenizer)
        pool.update_adapter(tensors, config)
        served = greedy(pool, pool.tokenizer)
        pool.update_adapter(tensors, config)  # a second push replaces the first (a new adapter id), same result
        again = greedy(pool, pool.tokenizer)
    finally:
        pool.shutdown()
    expected = greedy(HFEngine(merged_dir, dtype="float32", max_model_len=512), pool.tokenizer)
    assert served.token_ids == expected.token_ids == again.token_ids
    assert max(abs(a - b) for a, b in zip(served.logprobs, expected.logprobs, strict=True)) < 2e-3
    assert before.token_ids != served.token_ids or max(
        abs(a - b) for a, b in zip(before.logprobs, served.logprobs, strict=True)) > 1e-3


# ------------------------------------------------------------------------------------------------ rollouts ahead
def test_rollouts_ahead_keep_exact_policy_versions(envs, tiny_model_dir, built_dataset_writer, tmp_path) -> None:
    """max_staleness: 1 over one epoch of four steps: step 0's batch comes from the starting weights (nothing was
    queued before it), every later one from the weights one step old, each generated once, ahead, and trained once;
    a rollout worker killed while a batch is being generated ahead loses nothing."""
    import ray

    from posttrain.rollout.pool import RolloutPool
    from posttrain.stages.rl_logic import run_logic_track

    pool = RolloutPool(tiny_model_dir, **HF_ROLLOUT)
    killed: list[int] = []

    def kill_once(event: dict) -> None:  # after step 2 is logged, step 3's batch is being generated ahead
        if event["event"] == "log" and event["step"] == 2 and "loss" in event["metrics"] and not killed:
            killed.append(1)
            ray.kill(pool.workers[0], no_restart=True)

    config = base_config(tiny_model_dir, tmp_path / "out",
                         task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(envs["digits"], 16, 0)),
                         max_staleness=1, train={"max_steps": 4})
    try:
        done = run_logic_track(config, progress=kill_once, pool=pool)
        restarts = pool.restarts
    finally:
        pool.shutdown()
    rollouts = done.metrics["rollouts"]
    assert rollouts == {"max_staleness": 1, "batches": 4, "from_ahead": 4, "generated_on_demand": 0,
                        "dropped_stale": 0, "dropped_not_asked": 0, "episodes": 4 * 8, "staleness_mean": 0.75}
    assert killed and restarts >= 1
    logged = read_jsonl(tmp_path / "out" / "metrics.jsonl")
    train_rows = [r for r in logged if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]  # each step trained once
    assert [r["async/staleness"] for r in train_rows] == [0.0, 1.0, 1.0, 1.0]  # the weights each batch came from
    assert done.metrics["weight_sync"]["pushes"] == 5


def test_max_staleness_0_is_the_on_policy_loop_bit_for_bit(pool, envs, tiny_model_dir, built_dataset_writer,
                                                           tmp_path, monkeypatch) -> None:
    """The same run on-policy (max_staleness: 0) twice, once through the rollout thread that runs batches ahead
    (with nothing queued ahead, each batch generated when asked, verified on that thread): the same weights to the
    last bit, so the thread, the version stamps and verifying ahead change nothing."""
    from safetensors.torch import load_file

    import posttrain.stages.rl_logic as stage
    from posttrain.rl.ahead import RolloutThread

    tasks = task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(envs["digits"], 8, 0))

    def train(out: Path) -> dict:
        stage.run_logic_track(base_config(tiny_model_dir, out, tasks, train={"max_steps": 2}), pool=pool)
        return load_file(str(out / "model.safetensors"))

    direct = train(tmp_path / "direct")
    monkeypatch.setattr(stage, "rollout_thread", lambda cfg: RolloutThread())
    threaded = train(tmp_path / "threaded")
    assert direct.keys() == threaded.keys() and all((direct[k] == threaded[k]).all() for k in direct)
    manifest = json.loads((tmp_path / "threaded" / "manifest.json").read_text())
    assert manifest["metrics"]["rollouts"]["generated_on_demand"] == 2


# ------------------------------------------------------------------------------------------------ dynamic sampling
def test_refill_replaces_exactly_the_groups_of_equal_rewards(pool, envs, tiny_model_dir) -> None:
    """Echo tasks always score 1, so their groups are flat; digits tasks' scores vary with the reply. The groups
    dynamic sampling counts as flat are those a replay of the same draw (same rows, seeds, weights) finds flat, and
    each is replaced by another prompt's group."""
    from posttrain.config import validate
    from posttrain.rl.config import LogicTrackConfig, RewardSettings
    from posttrain.rl.rewards import combined_rewards, judge, reward_functions
    from posttrain.rl.rollout_func import PoolRollout, Refill
    from posttrain.rollout.agent_loop import AgentLoopConfig
    from posttrain.tasks import TaskRow, Verifiers, VerifySettings

    tasks = plugin_tasks(envs["echo"], 2, 0) + plugin_tasks(envs["digits"], 6, 0)
    rows = [TaskRow(i, t["id"], "tasks", "t", t["env"], t) for i, t in enumerate(tasks)]
    cfg = validate(LogicTrackConfig, base_config(tiny_model_dir, Path("unused"), "unused"), "test")
    params, agent, group = {"tasks": cfg.sampling.resolve()}, AgentLoopConfig(max_turns=1), 3
    batch = [r for r in (0, 2, 1, 3) for _ in range(group)]  # four groups: echo, digits, echo, digits
    pool.update_weights_from_path(tiny_model_dir)
    with Verifiers.start(VerifySettings(workers=1), {r.env for r in rows}) as verifiers:
        funcs, weights = reward_functions([envs["echo"], envs["digits"]], verifiers, RewardSettings())

        def verify(episodes):
            for env in {ep.env for ep in episodes}:
                judge([ep for ep in episodes if ep.env == env], verifiers[env])

        def score(episodes):
            return combined_rewards(episodes, funcs, weights, [ep.env for ep in episodes])

        replay, _ = PoolRollout(pool, rows, params, agent, {}, seed=5).play(batch, 7, group)
        verify([ep for _, ep in replay])
        rewards = score([ep for _, ep in replay])
        flat = [g for g in range(4) if max(rewards[3 * g:3 * g + 3]) - min(rewards[3 * g:3 * g + 3]) < 1e-9]
        refilling = PoolRollout(pool, rows, params, agent, {}, seed=5, refill=Refill(3, score=score, verify=verify))
        played, counts = refilling.play(batch, 7, group)
    assert {0, 2} <= set(flat)  # the echo groups
    assert counts["groups"] == 4 and counts["zero_variance"] == len(flat)
    assert counts["refilled"] >= len(flat) and 0 <= counts["kept_zero_variance"] <= len(flat)
    kept = [g for g in range(4) if g not in flat]
    for g in kept:  # groups with a spread are trained as drawn: the same episodes
        drawn = [ep.token_ids for _, ep in replay[3 * g:3 * g + 3]]
        assert [ep.token_ids for _, ep in played[3 * g:3 * g + 3]] == drawn
    final = score([ep for _, ep in played])
    still_flat = [g for g in range(4) if max(final[3 * g:3 * g + 3]) - min(final[3 * g:3 * g + 3]) < 1e-9]
    assert len(still_flat) == counts["kept_zero_variance"]
    assert all(len({r for r, _ in played[3 * g:3 * g + 3]}) == 1 for g in range(4))  # a group is one prompt's


def test_dynamic_sampling_in_the_track_is_counted_and_logged(pool, envs, tiny_model_dir, built_dataset_writer,
                                                             tmp_path) -> None:
    from posttrain.stages.rl_logic import run_logic_track

    tasks = plugin_tasks(envs["echo"], 2, 0) + plugin_tasks(envs["digits"], 6, 0)
    config = base_config(tiny_model_dir, tmp_path / "out", task_dataset(built_dataset_writer, tmp_path / "t", tasks),
                         dynamic_sampling={"max_rounds": 2}, agent={"max_turns": 1},
                         train={"max_steps": 2, "prompts_per_step": 4})
    stats = run_logic_track(config, pool=pool).metrics["dynamic_sampling"]
    logged = [r for r in read_jsonl(tmp_path / "out" / "metrics.jsonl") if "loss" in r]
    assert stats["groups"] == 8 and stats["zero_variance"] >= 1
    assert sum(r["dynamic/zero_variance_fraction"] * 4 for r in logged) == pytest.approx(stats["zero_variance"])
    assert sum(r["dynamic/kept_zero_variance"] for r in logged) == pytest.approx(stats["kept_zero_variance"])
    assert stats["zero_variance_fraction"] == pytest.approx(stats["zero_variance"] / 8)


# ------------------------------------------------------------------------------------------ LoRA in rm and rl-chat
def test_reward_model_and_chat_track_train_with_lora(tiny_model_dir, tmp_path) -> None:
    """The reward model (its score head too) and the Chat track's DPO train a LoRA through TRL's peft_config: the
    base weights stay frozen in training and the saved models are full merged folders the next stage loads."""
    from safetensors.torch import load_file

    from posttrain.config import load_config
    from posttrain.preference.scorers import RewardModelScorer
    from posttrain.stages.rl_chat import ChatTrackConfig, run_chat_track
    from posttrain.stages.rm import RMStageConfig, run_rm

    recipe = ROOT / "data_recipes/preference_tiny.yaml"
    lora = "{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}"
    rm = run_rm(load_config(RMStageConfig, None, [
        f"model={tiny_model_dir}", f"data={recipe}", f"output_dir={tmp_path / 'rm'}", f"lora={lora}",
        "train={max_steps: 4, learning_rate: 1.0e-2, max_length: 256, report_to: []}"]))
    m = rm.metrics
    assert m["steps"] == 4 and m["train_accuracy_after"] != m["train_accuracy_before"]
    RewardModelScorer(rm.output_dir)  # a full sequence-classification folder with the trained head
    adapter_rm = run_rm(load_config(RMStageConfig, None, [
        f"model={tiny_model_dir}", f"data={recipe}", f"output_dir={tmp_path / 'rm-adapter'}",
        "lora={r: 4, alpha: 8, target_modules: [q_proj], merge: false}",
        "train={max_steps: 1, max_length: 256, report_to: []}"]))
    assert (adapter_rm.output_dir / "adapter_config.json").is_file()
    scores = RewardModelScorer(adapter_rm.output_dir).score([[{"role": "user", "content": "hi"}]], ["hello"])
    assert isinstance(scores[0], float)

    chat = run_chat_track(load_config(ChatTrackConfig, None, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path / 'chat'}", "eval_fraction=0.2", f"offline.data={recipe}",
        "win_rate.prompts=0", f"lora={lora}",
        "offline.train={max_steps: 3, batch_size: 4, learning_rate: 1.0e-2, report_to: [], max_length: 256}"]),
        progress=lambda e: None)
    [summary] = chat.metrics["rounds"]
    assert summary["trained"] and summary["dpo"]["steps"] == 3
    trained, start = load_file(str(chat.model_dir / "model.safetensors")), load_file(
        str(Path(tiny_model_dir) / "model.safetensors"))
    changed = {k for k in start if not (trained[k].float() == start[k].float()).all()}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)  # only the LoRA-targeted layers moved


# -------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("overrides, message", [
    ({"lora": {**LORA, "target_modules": ["q_proj", "qkv"]}}, r"lora.target_modules: qkv match no module"),
    ({"lora": {**LORA, "r": 0}}, r"lora.r: input should be greater than 0"),
    ({"lora": {**LORA, "quantize": "4bit"}}, r"lora.quantize: 4bit \(QLoRA\) .* needs a CUDA GPU"),
    ({"max_staleness": -1}, r"max_staleness: input should be greater than or equal to 0"),
    ({"weight_push": "adapter"}, r"weight_push: adapter is how a LoRA policy reaches the workers; set lora"),
    ({"max_staleness": 1, "train": {"num_iterations": 2}}, r"max_staleness: rollouts ahead of training take one"),
    ({"lora": LORA, "rollout": {"engine": "vllm", "engine_kwargs": {"enable_lora": False}}},
     r"weight_push: adapter needs vLLM's LoRA support"),
])
def test_bad_budget_settings_fail_before_any_model_loads(overrides, message, envs, tiny_model_dir,
                                                         built_dataset_writer, tmp_path, monkeypatch) -> None:
    from posttrain.stages.rl_logic import run_logic_track

    def no_pool(*args, **kwargs):
        raise AssertionError("a rollout worker was started")

    monkeypatch.setattr("posttrain.rollout.pool.RolloutPool.__init__", no_pool)
    config = base_config(tiny_model_dir, tmp_path / "out",
                         task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(envs["digits"], 4, 0)),
                         **overrides)
    with pytest.raises(UserError, match=message):
        run_logic_track(config, source="rl.yaml")
    assert not (tmp_path / "out" / "checkpoints").exists()
