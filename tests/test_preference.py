"""Units of the Chat track: best/worst-of-K selection and tie skipping, pair building, win rate, judge replies,
the held-out split, prompt loading, and the scorer/track config checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.data import build_dataset
from posttrain.errors import UserError
from posttrain.preference.data import is_held_out, last_user_prefix, load_prompts, prompt_id, split_held_out
from posttrain.preference.pairs import build_pairs, select_pair
from posttrain.preference.scorers import JudgeScorer, ScorerConfig, parse_judge_score
from posttrain.preference.winrate import win_rate
from posttrain.stages.rl_chat import ChatTrackConfig

U = [{"role": "user", "content": "Name a prime number."}]


# ---- best / worst of K -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scores, expected", [
    ([0.1, 0.9, -0.5, 0.3], (1, 2)),
    ([2.0, 1.0], (0, 1)),
    ([1.0, 3.0, 3.0, 0.0, 0.0], (1, 3)),  # equal best/worst: the earliest of each
    ([None, 0.2, float("nan"), -0.1], (1, 3)),  # unscorable answers are ignored
    ([0.5, 0.5, 0.5], None),  # all tie
    ([0.5, None, None], None),  # one scored answer is no comparison
    ([], None),
])
def test_select_pair(scores: list, expected: tuple | None) -> None:
    assert select_pair(scores) == expected


def test_select_pair_min_gap_turns_near_ties_into_ties() -> None:
    assert select_pair([0.50, 0.52], min_gap=0.05) is None
    assert select_pair([0.50, 0.60], min_gap=0.05) == (1, 0)


def test_build_pairs_counts_every_skip() -> None:
    prompts = [{"id": f"p{i}", "bucket": "b", "prompt": U} for i in range(5)]
    responses = [["2", "9", "7"], ["3", "3"], ["5", "x"], ["11", "4"], ["same", "same"]]
    scores = [[1.0, -1.0, 0.5], [0.2, 0.2], [0.3, None], [2.0, -2.0], [1.0, 0.0]]
    pairs, stats = build_pairs(prompts, responses, scores)
    assert [p["id"] for p in pairs] == ["p0", "p3"]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "2"}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "9"}]
    assert pairs[0]["prompt"] == U and (pairs[0]["chosen_score"], pairs[0]["rejected_score"]) == (1.0, -1.0)
    assert stats.to_dict() == {"prompts": 5, "pairs": 2, "skipped_ties": 1, "skipped_unscored": 1,
                               "skipped_identical": 1, "responses": 11, "unscored_responses": 1}
    with pytest.raises(ValueError, match="2 responses but 1 scores"):
        build_pairs(prompts[:1], [["a", "b"]], [[1.0]])


# ---- win rate ----------------------------------------------------------------------------------------------------

def test_win_rate_counts_ties_as_half_and_reports_unscored() -> None:
    wr = win_rate([1.0, 0.0, 0.5, None, 2.0], [0.0, 1.0, 0.5, 1.0, 2.05], tie_tolerance=0.1)
    assert (wr.wins, wr.losses, wr.ties, wr.unscored, wr.compared) == (1, 1, 2, 1, 4)
    assert wr.rate == pytest.approx(0.5)
    assert win_rate([3.0, 2.0], [1.0, 1.0]).rate == 1.0
    assert win_rate([0.1, 0.2], [0.1, 0.2]).rate == 0.5  # a model against itself
    assert win_rate([None], [1.0]).rate is None
    assert win_rate([], []).to_dict()["rate"] is None


# ---- judge -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("7", 7.0), (" Score: 8/10", 8.0), ("9.5", 9.5), ("I'd say 3. Or 4.", 3.0), ("11", None), ("0", None),
    ("-3", None), ("", None), ("excellent!", None), (None, None),
])
def test_parse_judge_score(reply: str | None, expected: float | None) -> None:
    assert parse_judge_score(reply, 1, 10) == expected  # type: ignore[arg-type]


def test_judge_prompt_renders_braces_in_user_text_harmlessly() -> None:
    judge = JudgeScorer(pool=None, tokenizer=None, sampling=None)
    messages = judge.judge_prompt([{"role": "user", "content": "Fill in {response} and {x}"}], "A {conversation}!")
    text = messages[-1]["content"]
    assert "User: Fill in {response} and {x}" in text and "Assistant's reply:\nA {conversation}!" in text
    assert "from 1 (worst) to 10 (best)" in text


# ---- held-out split and prompts ----------------------------------------------------------------------------------

def test_held_out_split_is_by_prompt_and_stable() -> None:
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(2000)]
    held = [p for p in prompts if is_held_out(p, 0.2, seed=3)]
    assert 0.17 < len(held) / len(prompts) < 0.23
    assert held == [p for p in prompts if is_held_out(p, 0.2, seed=3)]
    assert held != [p for p in prompts if is_held_out(p, 0.2, seed=4)]
    assert not any(is_held_out(p, 0.0, seed=3) for p in prompts)
    # Two pairs with the same prompt always land on the same side.
    rows = [{"prompt": prompts[i % 50], "k": i} for i in range(200)]
    train, held_rows = split_held_out(rows, 0.3, seed=0)
    assert {prompt_id(r["prompt"]) for r in train}.isdisjoint({prompt_id(r["prompt"]) for r in held_rows})
    assert len(train) + len(held_rows) == 200


def test_last_user_prefix() -> None:
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    assert last_user_prefix(conv) == conv[:4]
    assert last_user_prefix([{"role": "assistant", "content": "x"}]) is None


def test_load_prompts_from_preference_chat_and_task_datasets(tmp_path: Path) -> None:
    pair = {"prompt": U, "chosen": "2", "rejected": "4"}
    (tmp_path / "p.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps({**pair, "rejected": "6"}) + "\n")
    chat = {"messages": [*U, {"role": "assistant", "content": "7"}]}
    (tmp_path / "c.jsonl").write_text(json.dumps(chat) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"env": "math", "messages": U}) + "\n")
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "some text"}) + "\n")
    for name, kind in (("p", "preference"), ("c", "chat"), ("t", "task"), ("x", "text")):
        recipe = f"kind: {kind}\nbuckets:\n  b{name}:\n    sources: [{{path: {name}.jsonl}}]\n"
        (tmp_path / f"{name}.yaml").write_text(recipe)
        build_dataset(tmp_path / f"{name}.yaml", tmp_path / name)
    rows, no_user = load_prompts(tmp_path / "p", "k")
    assert rows == [{"id": prompt_id(U), "bucket": "bp", "prompt": U}] and no_user == 0  # one prompt, two pairs
    assert load_prompts(tmp_path / "c", "k")[0][0]["prompt"] == U
    assert load_prompts(tmp_path / "t", "k")[0][0]["prompt"] == U
    with pytest.raises(UserError, match=r"k: .* holds 'text' rows; expected a preference, task or chat"):
        load_prompts(tmp_path / "x", "k")
    with pytest.raises(UserError, match="k: .* is not a built dataset"):
        load_prompts(tmp_path, "k")


# ---- config checks -----------------------------------------------------------------------------------------------

def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rl_chat.yaml"
    path.write_text("model: m\noutput_dir: out\n" + text)
    return path


@pytest.mark.parametrize("text, message", [
    ("", "nothing to train: set offline"),
    ("on_policy: {prompts: p}\n", "scorer: required for on-policy rounds"),
    ("offline: {data: d}\n", "scorer: required"),
    ("offline: {data: d}\nwin_rate: {prompts: 0}\nscorer: {kind: judge}\n", "judge_model"),
    ("offline: {data: d}\nscorer: {reward_model: r, judge_template: 'rate {response}'}\n", "{conversation}"),
    ("offline: {data: d}\nscorer: {reward_model: r, judge_scale: [5, 1]}\n", "low < high"),
    ("offline: {data: d, train: {beta: 0}}\nwin_rate: {prompts: 0}\n", "offline.train.beta"),
    ("offline: {data: d, train: {eval_fraction: 0.2}}\nwin_rate: {prompts: 0}\n", "top-level eval_fraction"),
    ("offline: {data: d, train: {packing: true}}\nwin_rate: {prompts: 0}\n", "cannot be packed"),
    ("on_policy: {prompts: p, samples_per_prompt: 1}\nscorer: {reward_model: r}\n", "on_policy.samples_per_prompt"),
    ("on_policy: {prompts: p, sampling: {n: 4}}\nscorer: {reward_model: r}\n", "samples_per_prompt instead"),
    ("on_policy: {prompts: p, sampling: {temperature: 0}}\nscorer: {reward_model: r}\n", "K identical answers"),
    ("offline: {data: d}\nwin_rate: {prompts: 0}\nrounds: 3\n", "rounds: unknown key"),
])
def test_bad_track_configs_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _config_file(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(ChatTrackConfig, path)
    assert str(path) in err.value.message and message in err.value.message


def test_scorer_config_defaults() -> None:
    cfg = ScorerConfig(reward_model="rm")
    assert cfg.kind == "reward_model" and cfg.judge_sampling.resolve().greedy
    assert math.isclose(cfg.min_gap, 0.0)
