"""The tool_calling environment end to end: episodes through reset/step, and verification of right and wrong
trajectories (state, facts, impossible turns, format errors, unknown tools, bad arguments, allow-list)."""

from __future__ import annotations

import copy
import json
import random

import pytest

from envs.tool_calling import (
    ToolCallingEnv,
    banking,
    cross,
    filesystem,
    messaging,
    reference_trajectory,
    scheduling,
    shop,
)
from envs.tool_calling.tasks import SCENARIO_GROUPS, make_task
from posttrain.environment import Trajectory, make_env
from posttrain.errors import UserError
from posttrain.tool_calls import format_assistant_message, format_tool_call


def task_of(scenario, seed: int = 1) -> dict:
    return make_task(scenario(random.Random(seed)))


def verify(task, messages):
    return ToolCallingEnv().verify(Trajectory(task, messages))


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def run_episode(env: ToolCallingEnv, task: dict, replies: list[str]):
    """Feed assistant messages until the episode ends; returns the conversation and the last step."""
    messages, _ = env.reset(task)
    last = None
    for text in replies:
        last = env.step(assistant(text))
        messages += [assistant(text), *last.observations]
        if last.done:
            break
    return messages, last


def test_loaded_by_name_and_reset_offers_the_task_tools():
    env = make_env("tool_calling")
    assert isinstance(env, ToolCallingEnv)
    task = task_of(banking.pay_bill)
    messages, tools = env.reset(task)
    assert messages == task["messages"] and messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert tools == task["tools"] and {t["function"]["name"] for t in tools} >= {"pay_bill", "list_payees"}


@pytest.mark.parametrize("scenario", [s for group in SCENARIO_GROUPS for s in group], ids=lambda s: s.__name__)
def test_reference_trajectories_pass(scenario):
    for seed in range(6):
        task = task_of(scenario, seed)
        messages = reference_trajectory(task)
        result = verify(task, messages)
        assert result.passed and result.score == 1.0 and result.error is None, (task["id"], result)
        assert not any("internal error" in m["content"] for m in messages if m["role"] == "tool")


def test_episode_multi_turn_observations_and_reward():
    task = task_of(banking.money_conversation)
    env = ToolCallingEnv()
    env.reset(task)
    turns = task["turns"]
    step = env.step(assistant(format_assistant_message("Let me look.", turns[0]["steps"][0])))
    assert not step.done and step.reward == 0.0 and [o["role"] for o in step.observations] == ["tool"]
    assert json.loads(step.observations[0]["content"])["result"]["account"] == "savings"
    step = env.step(assistant(turns[0]["reply"]))
    assert not step.done and step.observations == [{"role": "user", "content": turns[1]["user"]}]
    step = env.step(assistant(format_assistant_message("", turns[1]["steps"][0])))
    step = env.step(assistant(turns[1]["reply"]))
    assert step.observations[0]["content"] == turns[2]["user"]
    env.step(assistant(format_assistant_message("", turns[2]["steps"][0])))
    step = env.step(assistant(turns[2]["reply"]))
    assert step.done and step.reward == 1.0 and step.info["verify"]["passed"]
    with pytest.raises(RuntimeError):
        env.step(assistant("more"))


def test_wrong_state_fails():
    task = task_of(banking.transfer_once)
    messages = reference_trajectory(task)
    call = task["turns"][0]["steps"][0][0]
    wrong = copy.deepcopy(call)
    wrong["arguments"]["amount"] = round(call["arguments"]["amount"] - 0.01, 2)
    messages[2] = assistant(format_tool_call(wrong["name"], wrong["arguments"]))
    result = verify(task, messages)
    assert not result.passed and "state_mismatch" in result.reasons and result.details["state_differs_in"] == ["bank"]


def test_missing_fact_fails():
    task = task_of(banking.balance)
    messages = reference_trajectory(task)
    messages[-1] = assistant("I checked your balance.")
    result = verify(task, messages)
    spelling = task["turns"][0]["facts"][0][0]
    assert not result.passed and result.reasons == [f"missing_fact:{spelling}"]
    messages[-1] = assistant(f"Your balance is ${int(spelling.split('.')[0]):,}.{spelling.split('.')[1]}.")
    assert verify(task, messages).passed  # thousands separators are fine


def test_extra_read_only_calls_and_reordered_independent_calls_pass():
    task = task_of(shop.buy_two)
    messages = reference_trajectory(task)
    adds = task["turns"][0]["steps"][1]
    at = messages.index(assistant(format_assistant_message("", adds)))
    messages[at] = assistant(format_assistant_message("", [*reversed(adds), {"name": "view_cart", "arguments": {}}]))
    assert verify(task, messages).passed
    messages[at] = assistant(format_assistant_message("", adds[:1]))  # and the test can fail: one item missing
    assert verify(task, messages).reasons == ["state_mismatch"]


def test_a_tool_error_is_an_observation_not_a_failure_by_itself():
    task = task_of(banking.overdraft_recovery)
    messages, last = run_episode(ToolCallingEnv(), task, [
        format_tool_call("transfer", task["turns"][0]["steps"][0][0]["arguments"]),
        format_tool_call("transfer", task["turns"][0]["steps"][2][0]["arguments"]),
        task["turns"][0]["reply"],
    ])
    errors = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
    assert "insufficient funds" in errors[0]["error"] and "result" in errors[1]
    assert last.done and last.reward == 1.0


@pytest.mark.parametrize("scenario", [filesystem.impossible_files, scheduling.impossible_calendar,
                                      banking.impossible_bank, messaging.impossible_messaging, shop.impossible_shop])
def test_impossible_tasks_pass_without_calls_and_fail_with_one(scenario):
    for seed in range(6):
        task = task_of(scenario, seed)
        assert task["kind"] == "impossible" and task["turns"][0]["possible"] is False
        ok = [*task["messages"], assistant(task["turns"][0]["reply"])]
        assert verify(task, ok).passed
        offered = task["tools"][0]["function"]["name"]
        args = {"unread_only": True} if offered == "read_inbox" else {}
        bad = [*task["messages"], assistant(format_tool_call(offered, args)), assistant(task["turns"][0]["reply"])]
        result = verify(task, bad)
        assert not result.passed and "unexpected_call" in result.reasons


def test_withheld_tool_is_not_callable():
    task = next(t for t in (task_of(banking.impossible_bank, seed) for seed in range(100))
                if "pay_bill" not in {tool["function"]["name"] for tool in t["tools"]})
    env = ToolCallingEnv()
    env.reset(task)
    payee = sorted(task["domains"]["bank"]["payees"])[0]
    step = env.step(assistant(format_tool_call("pay_bill", {"account": "checking", "payee_id": payee, "amount": 5})))
    assert "unknown tool 'pay_bill'" in json.loads(step.observations[0]["content"])["error"]
    assert step.info["calls"] == [{"name": "pay_bill", "status": "unknown_tool"}]
    assert env._world.domains["bank"].state == task["domains"]["bank"]  # nothing was paid


def test_malformed_json_is_an_error_observation_and_a_format_failure():
    task = task_of(banking.balance)
    env = ToolCallingEnv()
    env.reset(task)
    step = env.step(assistant('<tool_call>{"name": "get_balance", "arguments": {"account": </tool_call>'))
    assert not step.done and step.info["format_error"]
    assert "malformed JSON" in json.loads(step.observations[0]["content"])["error"]
    step = env.step(assistant("<tool_call>" + json.dumps(task["turns"][0]["steps"][0][0])))  # unclosed
    assert "unclosed" in json.loads(step.observations[0]["content"])["error"]
    messages = reference_trajectory(task)
    messages.insert(2, assistant('<tool_call>{"name": get_balance}</tool_call>'))
    result = verify(task, messages)
    assert not result.passed and result.reasons == ["format_error"]


def test_unknown_tool_and_wrong_argument_types():
    task = task_of(banking.transfer_once)
    call = task["turns"][0]["steps"][0][0]
    env = ToolCallingEnv()
    env.reset(task)
    step = env.step(assistant(format_tool_call("wire_money", {"amount": 5})))
    assert "unknown tool" in json.loads(step.observations[0]["content"])["error"]
    bad_args = {**call["arguments"], "amount": str(call["arguments"]["amount"])}
    step = env.step(assistant(format_tool_call("transfer", bad_args)))
    error = json.loads(step.observations[0]["content"])["error"]
    assert error.startswith("invalid arguments: transfer: amount:") and "is not of type 'number'" in error
    assert env._world.domains["bank"].state == task["domains"]["bank"]
    for extra, reason in [(format_tool_call("wire_money", {}), "unknown_tool"),
                          (format_tool_call("transfer", bad_args), "invalid_arguments"),
                          (format_tool_call("transfer", {**call["arguments"], "memo": "x"}), "invalid_arguments")]:
        messages = reference_trajectory(task)
        messages.insert(2, assistant(extra))
        result = verify(task, messages)
        assert not result.passed and result.reasons == [reason], (extra, result)


@pytest.mark.parametrize("name", ["__init__", "_state", "_debit", "_log", "_account", "state", "snapshot",
                                  "tool_table", "tool_functions", "__class__", "__dict__"])
def test_only_allow_listed_tools_can_be_called(name):
    task = task_of(banking.transfer_once)
    env = ToolCallingEnv()
    env.reset(task)
    step = env.step(assistant(format_tool_call(name, {"account": "checking", "cents": 100})))
    assert step.info["calls"] == [{"name": name, "status": "unknown_tool"}]
    assert env._world.domains["bank"].state == task["domains"]["bank"]
    messages = reference_trajectory(task)
    messages.insert(2, assistant(format_tool_call(name, {})))
    assert "unknown_tool" in verify(task, messages).reasons


def test_incomplete_mismatched_and_overlong_conversations_fail():
    task = task_of(messaging.reply_conversation)
    full = reference_trajectory(task)
    cut = full[:full.index({"role": "user", "content": task["turns"][1]["user"]})]
    assert verify(task, cut).reasons[0] == "incomplete"
    forged = copy.deepcopy(full)
    forged[forged.index({"role": "user", "content": task["turns"][1]["user"]})]["content"] = "Never mind."
    assert "conversation_mismatch" in verify(task, forged).reasons

    env = ToolCallingEnv()
    env.reset(task)
    lookup = format_tool_call("read_inbox", {})
    steps = [env.step(assistant(lookup)) for _ in range(task["max_turns"])]
    assert steps[-1].done and steps[-1].info["truncated"] and not any(s.done for s in steps[:-1])
    assert {"incomplete", "turn_limit"} <= set(steps[-1].info["verify"]["reasons"])


def test_cross_domain_task_changes_both_worlds_consistently():
    task = task_of(cross.share_wifi_password)
    assert set(task["domains"]) == {"files", "messaging"}
    messages = reference_trajectory(task)
    assert verify(task, messages).passed
    send = task["turns"][0]["steps"][1][0]
    wrong = {**send["arguments"], "text": send["arguments"]["text"] + "!"}
    messages[messages.index(assistant(format_tool_call("send_message", send["arguments"])))] = \
        assistant(format_tool_call("send_message", wrong))
    assert verify(task, messages).reasons == ["state_mismatch"]


def test_bad_tasks_are_user_errors_or_verification_errors():
    task = task_of(banking.balance)
    env = ToolCallingEnv()
    for broken, match in [({"domains": {"casino": {}}}, "unknown domains"),
                          ({"domains": {"bank": {"accounts": {}}}}, "domain 'bank' state"),
                          ({"turns": []}, "turns"),
                          ({"tools": [*task["tools"], {"type": "function", "function": {"name": "fly"}}]},
                           "not provided by its domains")]:
        with pytest.raises(UserError, match=match):
            env.reset({**task, **broken})
    no_tool = {**task, "tools": [t for t in task["tools"] if t["function"]["name"] != "get_balance"]}
    result = verify(no_tool, reference_trajectory(task))
    assert not result.passed and result.reasons == ["bad_task"] and "reference call get_balance" in result.error
