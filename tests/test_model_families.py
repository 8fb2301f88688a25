"""Every stage on three non-SmolLM template families, each model named by a Hub id and resolved offline from a local
Hugging Face cache (no hub is reachable here):

- ``qwen3``: Qwen3 weights and tokens with Qwen3's own chat template (Hermes tool calls; the reasoning of turns before
  the latest user message is dropped when the conversation grows);
- ``llama3``: Llama 3's header tokens and Llama 3.2's own template (JSON tool calls, ``ipython`` tool results);
- ``plain``: a base model with no chat template, given a custom one through the ``chat_template`` key (the plain-JSON
  tool format).

For each: ``sft`` (its assistant-mask method and token masks), ``sample`` of multi-turn tool-calling tasks (through
vLLM for qwen3, so the SFT output is what vLLM loads; through the transformers engine for the other two, which
generate from the same token ids we render, and a vLLM engine costs half a minute per family), ``rl-logic`` steps,
``calibrate`` (p_yes read through the model's own template), ``eval`` of the Hub model against the outputs, and every
output folder loads in transformers and vLLM with the template intact (the same rendering as the input model's). About
a minute per family: slow. The whole pipeline on a Hub id is tests/test_pipeline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import render_tool_conversation

from envs.tool_calling import reference_trajectory
from envs.tool_calling.tasks import generate_tasks as tool_tasks

pytestmark = pytest.mark.slow

MAX_LEN = 2048  # tool-calling prompts (every tool schema in the prompt) take 800-1300 tokens here
PLAIN_TEMPLATE = (
    "{% if tools %}### tools\n{{ tools | tojson }}\nCall one with a JSON object {\"name\", \"arguments\"}.\n{% endif %}"
    "{% for m in messages %}### {{ m.role }}\n{{ m.content }}{% if m.role == 'assistant' %}<|endoftext|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}### assistant\n{% endif %}")
# Calibration needs both right and wrong answers from a random model: a reply passes when the first byte of its
# sha256 is even (about half of them).
PARITY_ENV = '''
import hashlib
from posttrain.environment import Environment, StepResult, VerifyResult


class ParityEnv(Environment):
    name = "parity"

    def reset(self, task):
        return [dict(m) for m in task["messages"]], []

    def step(self, assistant_message):
        return StepResult(done=True)

    def verify(self, trajectory):
        passed = hashlib.sha256(trajectory.final_answer.encode()).digest()[0] % 2 == 0
        return VerifyResult(passed=passed, score=float(passed))

    def generate_tasks(self, n, seed):
        for i in range(n):
            yield {"id": f"parity-{seed}-{i}", "env": __file__, "tools": [],
                   "messages": [{"role": "user", "content": f"Tell me about the number {seed * 1000 + i}."}]}
'''
FAMILIES = {  # family -> (Hub id, the config's chat_template, tool format, assistant-mask method, end of turn, engine)
    "qwen3": ("tiny-org/qwen3-thinking", None, "hermes", "trl_training_template", "<|im_end|>", "vllm"),
    "llama3": ("tiny-org/llama3-json-tools", None, "llama3_json", "prefix_rendering", "<|eot_id|>", "hf"),
    "plain": ("tiny-org/plain-base", "TEMPLATE_FILE", "json", "prefix_rendering", "<|endoftext|>", "hf"),
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_family, hub_cache_writer) -> Path:
    """A Hugging Face cache holding the three tiny models under their Hub ids."""
    home = tmp_path_factory.mktemp("hf_home")
    for family, (repo, *_rest) in FAMILIES.items():
        hub_cache_writer(home, repo, tiny_family(family))
    return home


@pytest.fixture(scope="module")
def data(tmp_path_factory, built_dataset_writer) -> dict[str, Path]:
    """SFT rows (the tool_calling env's reference conversations, tools and calls in the interchange form) and
    multi-turn tool-calling tasks to sample, train and evaluate on."""
    root = tmp_path_factory.mktemp("family_data")
    tasks = [t for t in tool_tasks(40, 7) if t["kind"] in ("multi_turn", "single_call")][:6]
    chats = [{"messages": reference_trajectory(t), "tools": json.dumps(t["tools"])} for t in tasks]
    task_rows = [{"env": "tool_calling", "messages": t["messages"], "tools": json.dumps(t["tools"]),
                  "task": json.dumps(t), "id": t["id"]} for t in tasks]
    template = root / "plain.jinja"
    template.write_text(PLAIN_TEMPLATE)
    (root / "parity_env.py").write_text(PARITY_ENV)
    return {"chat": built_dataset_writer(root / "chat", "chat", chats),
            "tasks": built_dataset_writer(root / "tasks", "task", task_rows), "template": template,
            "parity_env": root / "parity_env.py"}


def _renders_like_the_input(folder: Path, expected: str) -> None:
    """The saved folder's template, as transformers and vLLM load it, renders like the input model's."""
    from vllm.tokenizers import get_tokenizer

    assert render_tool_conversation(folder) == expected, folder
    assert render_tool_conversation(get_tokenizer(str(folder))) == expected, folder


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_stage_on_a_hub_model_of_this_family(family, hub, data, tiny_family, tmp_path, monkeypatch) -> None:
    from posttrain.manifest import read_manifest
    from posttrain.models.chat import load_chat
    from posttrain.models.masks import plan_masks
    from posttrain.rollout.pool import RolloutPool
    from posttrain.stages.calibrate import CalibrateConfig, run_calibrate
    from posttrain.stages.eval import EvalConfig, run_eval
    from posttrain.stages.rl_logic import run_logic_track
    from posttrain.stages.sample import SampleConfig, run_sample
    from posttrain.stages.sft import SFTStageConfig, SFTTrain, run_sft, tokenized_rows

    repo, template_key, tool_format, mask_method, end, engine = FAMILIES[family]
    template = str(data["template"]) if template_key else None
    monkeypatch.setenv("HF_HOME", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm_cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    expected = render_tool_conversation(tiny_family(family), PLAIN_TEMPLATE if template else None)
    chat_keys = {"chat_template": template} if template else {}

    # sft on the Hub id: the model's own template (or the config's), its mask method, its commit in the manifest.
    sft_out = tmp_path / "sft"
    sft = run_sft(SFTStageConfig(model=repo, data=data["chat"], output_dir=sft_out, **chat_keys,
                                 train=SFTTrain(max_steps=3, batch_size=3, learning_rate=1e-3, report_to=[],
                                                save_steps=100)))
    m = sft.metrics
    assert m["steps"] == 3 and m["train_loss_last"] == m["train_loss_last"]  # not NaN
    assert m["chat"]["assistant_mask"]["method"] == mask_method and m["chat"]["tool_format"] == tool_format
    assert m["chat"]["template"]["source"] == (template or "model")
    assert sft.manifest["hub_models"][repo]["repo_id"] == repo and len(sft.manifest["hub_models"][repo]["commit"]) == 40
    _renders_like_the_input(sft_out, expected)
    # The rows the trainer got: every conversation's assistant turns masked, each ending on the end-of-turn token.
    from datasets import Dataset

    from posttrain.data import load_built

    chat = load_chat(sft_out)
    rows = Dataset.from_dict({"messages": load_built(data["chat"])["messages"],
                              "tools": load_built(data["chat"])["tools"]})
    tokenized, _ = tokenized_rows(chat, rows, plan_masks(chat), True, data["chat"])
    end_id = chat.tokenizer.convert_tokens_to_ids(end)
    for ids, mask in zip(tokenized["input_ids"], tokenized["assistant_masks"], strict=True):
        trained = [t for t, b in zip(ids, mask, strict=True) if b]
        assert trained and end_id in trained
        starts = [i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1])]
        ends = [i for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
        assert all(ids[e] == end_id or chat.tokenizer.decode(ids[e]).strip() == "" for e in ends), family
        assert len(starts) == len(ends) >= 1

    engine_kwargs = {"dtype": "float32", "max_model_len": MAX_LEN}
    if engine == "vllm":
        engine_kwargs["kv_cache_gib"] = 0.25
    pool = RolloutPool(sft_out, engine=engine, resources={"num_cpus": 0.5}, engine_kwargs=engine_kwargs)
    try:
        # sample: multi-turn tool-calling tasks, in the model's format.
        sampled = run_sample(SampleConfig(
            model=str(sft_out), output_dir=tmp_path / "sample", tasks={"dataset": str(data["tasks"])}, **chat_keys,
            sampling={"n": 2, "temperature": 1.0, "max_tokens": 24}, agent={"max_turns": 3},
            verify={"workers": 1}, batch_size=3), pool=pool).manifest
        assert sampled["metrics"]["chat"]["tool_format"] == tool_format
        samples = [s for shard in sorted((tmp_path / "sample" / "shards").glob("batch_*.jsonl"))
                   for line in shard.read_text().splitlines() for s in json.loads(line)["samples"]]
        assert len(samples) == 12 and all(s["exact"] for s in samples)
        assert max(sum(m["role"] == "assistant" for m in s["messages"]) for s in samples) >= 2  # multi-turn

        # rl-logic: GRPO steps on the same tasks, the episodes in the model's format.
        rl_out = tmp_path / "rl"
        run_logic_track({"model": str(sft_out), "output_dir": str(rl_out), "tasks": {"dataset": str(data["tasks"])},
                         **chat_keys, "train": {"max_steps": 2, "prompts_per_step": 2, "num_generations": 2,
                                                "learning_rate": 1e-3, "report_to": [], "save_steps": 100},
                         "sampling": {"max_tokens": 16}, "agent": {"max_turns": 2}, "verify": {"workers": 1}},
                        pool=pool)
        rl = read_manifest(rl_out)["metrics"]
        assert rl["steps"] == 2 and rl["chat"]["tool_format"] == tool_format and "rollout_forks" in rl
        _renders_like_the_input(rl_out, expected)

        # calibrate: p_yes confidences read through the model's own template (temperature scaling).
        pool.update_weights_from_path(rl_out)
        cal_out = tmp_path / "calibrate"
        calibrated = run_calibrate(CalibrateConfig.model_validate({
            "model": str(rl_out), "output_dir": str(cal_out), "method": "temperature", **chat_keys,
            "generate": {"env": str(data["parity_env"]), "n": 16, "seed": 0}, "eval_fraction": 0.5,
            "sampling": {"eval": {"max_tokens": 12, "temperature": 1.0}}, "verify": {"workers": 1}}), generator=pool)
        assert calibrated.manifest["status"] == "calibrated"
        assert calibrated.manifest["metrics"]["elicitation_before"]["no_answer"] == 0
        _renders_like_the_input(cal_out, expected)

        # eval: the Hub model itself against the outputs, each loaded into the same workers.
        result = run_eval(EvalConfig.model_validate({
            "models": {"base": repo, "sft": str(sft_out), "final": str(cal_out)}, "output_dir": str(tmp_path / "eval"),
            "sets": {"tools": {"dataset": str(data["tasks"])}}, **chat_keys, "sampling": {"max_tokens": 12},
            "agent": {"max_turns": 2}, "verify": {"workers": 1}, "rollout": {"engine": engine}}), workers=pool)
        assert set(result.metrics["models"]) == {"base", "sft", "final"}
        assert result.manifest["hub_models"][repo]["repo_id"] == repo
    finally:
        pool.shutdown()
