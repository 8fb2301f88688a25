"""Reward hacks the tool_calling verifier must not reward: enumerating candidates so the fact is somewhere in the
reply, facts hidden in reasoning, and trying call after call until one works. Each hack is a real trajectory replayed
by the verifier; the honest trajectory of the same task passes, so each test can fail."""

from __future__ import annotations

import random

import pytest

from envs.tool_calling import ToolCallingEnv, banking, reference_trajectory, scheduling
from envs.tool_calling.tasks import make_task
from envs.tool_calling.verify import shaped_values, value_shape
from posttrain.environment import Trajectory
from posttrain.tool_calls import format_assistant_message, format_tool_call


def task_of(scenario, seed: int = 1) -> dict:
    return make_task(scenario(random.Random(seed)))


def verify(task, messages):
    return ToolCallingEnv().verify(Trajectory(task, messages))


def with_reply(task: dict, reply: str) -> list[dict]:
    messages = reference_trajectory(task)
    assert messages[-1]["role"] == "assistant"
    return [*messages[:-1], {"role": "assistant", "content": reply}]


def test_listing_a_thousand_ids_that_include_the_right_one_fails() -> None:
    task = task_of(banking.transfer_once)
    right = task["turns"][0]["facts"][0][0]  # tx-NNNN
    assert verify(task, with_reply(task, f"Done. Your confirmation number is {right}.")).passed
    number = int(right.split("-")[1])
    ids = [f"tx-{i}" for i in range(number - 500, number + 500)]
    result = verify(task, with_reply(task, "The confirmation number is one of: " + ", ".join(ids) + "."))
    assert right in ids and not result.passed
    assert "reply_too_long" in result.reasons and f"enumeration:{right}" in result.reasons


def test_a_short_list_of_candidates_fails_too() -> None:
    task = task_of(banking.transfer_once)
    right = task["turns"][0]["facts"][0][0]
    number = int(right.split("-")[1])
    candidates = [f"tx-{number + d}" for d in range(-4, 5)]  # nine ids, well within the length limit
    result = verify(task, with_reply(task, f"It is {', '.join(candidates)}."))
    assert result.reasons == [f"enumeration:{right}"]
    # ...while an honest reply that mentions another id or two of the same shape still passes
    assert verify(task, with_reply(task, f"Done: {right} (your previous transfer was tx-{number - 1}).")).passed


def test_listing_many_amounts_fails() -> None:
    task = task_of(banking.balance)
    right = task["turns"][0]["facts"][0][0]  # 1234.56
    amounts = [f"${d}.{c:02d}" for d in range(int(float(right)) - 3, int(float(right)) + 3) for c in (0, 50)]
    amounts.append(f"${right}")
    result = verify(task, with_reply(task, "Your balance is one of " + " or ".join(amounts) + "."))
    assert result.reasons == [f"enumeration:{right}"]


def test_a_fact_only_in_hidden_reasoning_is_not_told_to_the_user() -> None:
    task = task_of(banking.balance)
    right = task["turns"][0]["facts"][0][0]
    assert verify(task, with_reply(task, f"<think>It is {right}.</think>Your balance is ${right}.")).passed
    result = verify(task, with_reply(task, f"<think>The balance is {right}.</think>I checked your balance."))
    assert result.reasons == [f"missing_fact:{right}"]
    unclosed = verify(task, with_reply(task, f"I checked your balance. <think>It is {right}"))
    assert unclosed.reasons == [f"missing_fact:{right}"]


def _with_failing_transfers(task: dict, failures: int) -> list[dict]:
    """The reference conversation with ``failures`` refused transfers (amount larger than any balance) first."""
    env = ToolCallingEnv()
    messages, _ = env.reset(task)
    too_much = {"source": "checking", "target": "savings", "amount": 99_999_999.0}
    for _ in range(failures):
        text = format_tool_call("transfer", too_much)
        messages.append({"role": "assistant", "content": text})
        messages += env.step({"role": "assistant", "content": text}).observations
    for step in task["turns"][0]["steps"]:
        text = format_assistant_message("", step)
        messages.append({"role": "assistant", "content": text})
        messages += env.step({"role": "assistant", "content": text}).observations
    messages.append({"role": "assistant", "content": task["turns"][0]["reply"]})
    return messages


def test_trying_call_after_call_until_one_works_fails() -> None:
    task = {**task_of(banking.transfer_once), "max_turns": 100}
    assert verify(task, _with_failing_transfers(task, 2)).passed  # a couple of mistakes are allowed
    result = verify(task, _with_failing_transfers(task, 3))
    assert result.reasons == ["too_many_failed_calls"] and result.details["calls"]["tool_error"] == 3
    # the reference itself may need a refused call (overdraft recovery); that one does not count against it
    recovery = task_of(banking.overdraft_recovery)
    assert verify(recovery, reference_trajectory(recovery)).passed


def test_unlimited_read_only_calls_fail() -> None:
    task = {**task_of(banking.balance), "max_turns": 100}
    messages = reference_trajectory(task)
    probe = {"role": "assistant", "content": format_assistant_message(
        "", [{"name": "list_accounts", "arguments": {}}] * 12)}
    assert verify(task, [*messages[:2], probe, *messages[2:]]).reasons == ["too_many_calls"]
    few = {"role": "assistant", "content": format_assistant_message("", [{"name": "list_accounts", "arguments": {}}])}
    assert verify(task, [*messages[:2], few, *messages[2:]]).passed


def test_a_task_sets_its_own_limits_and_bad_limits_are_a_bad_task() -> None:
    task = task_of(scheduling.agenda)
    honest = reference_trajectory(task)
    assert verify(task, honest).passed
    assert verify({**task, "limits": {"reply_chars": 5}}, honest).reasons == ["reply_too_long"]
    strict = task_of(banking.transfer_once)
    right = strict["turns"][0]["facts"][0][0]
    other = f"tx-{int(right.split('-')[1]) + 1}"
    assert verify({**strict, "limits": {"extra_values": 0}},
                  with_reply(strict, f"{right}, not {other}")).reasons == [f"enumeration:{right}"]
    for bad in ({"reply_chars": -1}, {"speed": 1}, "many"):
        result = verify({**task, "limits": bad}, honest)
        assert result.reasons == ["bad_task"] and "limits" in result.error


@pytest.mark.parametrize("text, spelling, values", [
    ("Paid tx-12 and tx-13, not (tx-14).", "tx-99", {"tx-12", "tx-13", "tx-14"}),
    ("$1,234.50 or $7.00 or 12", "500.50", {"1234.50", "7.00"}),
    ("on 2025-01-02 at 09:30-10:30", "2025-03-04", {"2025-01-02"}),
    ("I marked 3 messages", "3", {"3"}),
])
def test_values_of_the_same_shape(text, spelling, values) -> None:
    assert shaped_values(text, value_shape(spelling)) == values
    assert value_shape("Lunch with Ana") is None and value_shape("dentist") is None
