"""The tool_call_match environment: model calls checked against ground-truth calls as BFCL's AST checker does
(names, required and unexpected arguments, types, possible values with normalised strings, optional arguments,
parallel calls in any order or in order, nested values, no-call tasks), its generator, bad tasks, and the reward
hacks it is tested against (extra or duplicated calls, stuffed arguments, strings for numbers, broken blocks)."""

from __future__ import annotations

import pytest

from envs.tool_call_match import ToolCallMatchEnv
from envs.tool_call_match.samples import TOOLS
from posttrain.environment import Trajectory, make_env
from posttrain.errors import UserError
from posttrain.tool_calls import format_assistant_message, format_tool_call

WEATHER, CURRENCY, TIMER = TOOLS["get_weather"], TOOLS["convert_currency"], TOOLS["set_timer"]
NESTED = {"type": "function", "function": {"name": "book", "description": "Book a trip.", "parameters": {
    "type": "object", "required": ["trip"], "properties": {
        "trip": {"type": "object"}, "stops": {"type": "array", "items": {"type": "string"}}}}}}


def task(truth, tools=(WEATHER, CURRENCY), order="any") -> dict:
    return {"id": "t", "env": "tool_call_match", "tools": list(tools), "ground_truth": truth, "order": order,
            "messages": [{"role": "user", "content": "Do it."}]}


def weather(city="Paris", unit=("celsius", "")) -> dict:
    return {"name": "get_weather", "arguments": {"city": [city], "unit": list(unit)}}


def verify(t: dict, *calls: dict, text: str = ""):
    reply = format_assistant_message(text, list(calls)) if calls else text
    return ToolCallMatchEnv().verify(Trajectory(t, [*t["messages"], {"role": "assistant", "content": reply}]))


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def test_a_matching_call_passes_with_normalised_strings_and_optional_arguments() -> None:
    t = task([weather()])
    for ok in (call("get_weather", city="Paris"), call("get_weather", city="paris", unit="celsius"),
               call("get_weather", city=" PARIS. ")):
        result = verify(t, ok)
        assert result.passed and result.score == 1.0 and result.reasons == [], ok
    assert verify(task([weather(unit=("fahrenheit",))]), call("get_weather", city="Paris")).reasons == \
        ["missing_argument:unit"]


@pytest.mark.parametrize("bad, reason", [
    (call("convert_currency", amount=1, source="USD", target="EUR"), "wrong_function"),
    (call("get_weather", unit="celsius"), "missing_argument:city"),
    (call("get_weather", city="Paris", country="France"), "unexpected_argument:country"),
    (call("get_weather", city=7), "wrong_type:city"),
    (call("get_weather", city="London"), "wrong_value:city"),
    (call("get_weather", city="Paris", unit="kelvin"), "wrong_value:unit"),
])
def test_each_kind_of_mismatch_is_named(bad, reason) -> None:
    result = verify(task([weather()]), bad)
    assert not result.passed and result.score == 0.0 and reason in result.reasons


def test_numbers_by_value_ints_for_numbers_but_not_strings_or_booleans() -> None:
    t = task([call("convert_currency", amount=[20], source=["USD"], target=["EUR"])])
    assert verify(t, call("convert_currency", amount=20.0, source="usd", target="eur")).passed
    assert verify(t, call("convert_currency", amount="20", source="USD", target="EUR")).reasons == \
        ["wrong_type:amount"]
    timer = task([call("set_timer", minutes=[1])], tools=[TIMER])
    assert verify(timer, call("set_timer", minutes=True)).reasons == ["wrong_type:minutes"]


def test_parallel_calls_match_as_a_set_or_in_order() -> None:
    truth = [weather("Paris"), weather("Oslo")]
    a, b = call("get_weather", city="Paris"), call("get_weather", city="Oslo")
    assert verify(task(truth), b, a).passed
    ordered = task(truth, order="given")
    assert verify(ordered, a, b).passed
    result = verify(ordered, b, a)
    assert not result.passed and result.score == 0.0
    half = verify(task(truth), a)
    assert not half.passed and half.score == 0.5 and "wrong_count" in half.reasons


def test_nested_objects_and_lists() -> None:
    t = task([{"name": "book", "arguments": {"trip": [{"city": ["Lima", "lima peru"], "nights": [2, ""]}],
                                            "stops": [["Cusco", "Puno"], ""]}}], tools=[NESTED])
    assert verify(t, call("book", trip={"city": "Lima Peru", "nights": 2}, stops=["cusco", "puno"])).passed
    assert verify(t, call("book", trip={"city": "Lima"})).passed
    assert verify(t, call("book", trip={"city": "Lima"}, stops=["Puno", "Cusco"])).reasons == ["wrong_value:stops"]
    assert verify(t, call("book", trip={"city": "Lima", "pool": True})).reasons == ["wrong_value:trip"]


def test_a_no_call_task_passes_only_without_calls() -> None:
    t = task([])
    assert verify(t, text="Canberra is the capital of Australia.").passed
    result = verify(t, call("get_weather", city="Canberra"))
    assert not result.passed and result.score == 0.0 and result.reasons == ["unexpected_call"]
    assert verify(task([weather()]), text="It is sunny.").reasons == ["no_call"]


def test_hacks_extra_calls_duplicates_and_stuffed_arguments_do_not_pay() -> None:
    t = task([weather("Paris")])
    right = call("get_weather", city="Paris")
    spray = [call("get_weather", city=c) for c in ("Paris", "Oslo", "Lima", "Seoul")]
    result = verify(t, *spray)
    assert not result.passed and result.score == 0.25  # one match over four calls: extra calls cost
    duplicate = verify(t, right, right)
    assert not duplicate.passed and duplicate.score == 0.5
    assert verify(t, call("get_weather", city="Paris or Oslo or Lima")).reasons == ["wrong_value:city"]
    everything = [call(name, **{}) for name in ("get_weather", "convert_currency")]
    assert verify(t, *everything).score == 0.0
    broken = verify(t, right, text="<tool_call>{not json</tool_call>")
    assert not broken.passed and broken.reasons[0] == "format_error"
    assert verify(t, call("delete_everything")).reasons[0] == "unknown_tool"


def test_an_episode_is_one_turn_and_bad_tasks_are_refused() -> None:
    env = make_env("tool_call_match")
    t = task([weather()])
    messages, tools = env.reset(t)
    assert tools == t["tools"] and messages == t["messages"]
    step = env.step({"role": "assistant", "content": format_tool_call("get_weather", {"city": "Paris"})})
    assert step.done and step.reward == 1.0 and step.info["verify"]["passed"]
    with pytest.raises(RuntimeError):
        env.step({"role": "assistant", "content": "again"})
    long = [*t["messages"], {"role": "assistant", "content": format_tool_call("get_weather", {"city": "Paris"})},
            {"role": "user", "content": "more"}, {"role": "assistant", "content": "ok"}]
    assert env.verify(Trajectory(t, long)).reasons == ["turn_limit"]
    for broken, match in [({"ground_truth": [call("fly", to=["Mars"])]}, "not among its tools"),
                          ({"ground_truth": [call("get_weather", town=["x"])]}, r"arguments \['town'\] are not"),
                          ({"ground_truth": [call("get_weather", unit=["c"])]}, r"required arguments \['city'\]"),
                          ({"ground_truth": [call("get_weather", city=[])]}, "lists no possible value"),
                          ({"order": "random"}, "order"), ({"tools": [{"function": {}}]}, "tools/0")]:
        with pytest.raises(UserError, match=match):
            env.reset({**t, **broken})
        result = env.verify(Trajectory({**t, **broken}, t["messages"]))
        assert result.reasons == ["bad_task"] and result.error


def test_generator_is_seeded_distinct_and_its_references_pass() -> None:
    env = ToolCallMatchEnv()
    tasks = list(env.generate_tasks(120, seed=3))
    assert tasks == list(env.generate_tasks(120, seed=3)) and len({t["id"] for t in tasks}) == 120
    assert {t["family"] for t in tasks} == {"single", "currency", "parallel", "units", "multiple", "choice",
                                            "restaurants", "irrelevant"}
    for t in tasks:
        assert env.verify(Trajectory(t, env.reference_trajectory(t))).passed, t["id"]
    with pytest.raises(UserError, match=">= 0"):
        list(env.generate_tasks(-1, 0))
