"""Your reward functions (TRL's ``reward_funcs`` signature, by file or dotted path) and the OpenAI-compatible judge
endpoint: how the functions are called (conversational completions, task fields as columns), combined with the env
rewards by weights, their bad input (a wrong spec, a function without **kwargs, wrong return values, a function that
crashes on some output), selection by reward, and the judge against a small local HTTP server started here (models
list, ratings, unusable replies, failing requests, an unreachable endpoint, a model it does not serve)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from posttrain.errors import UserError
from posttrain.rejection.selection import SelectionConfig, select
from posttrain.rl.rewards import (
    CombinedReward,
    FunctionReward,
    RewardFunctions,
    RewardFunctionSpec,
    RewardSettings,
    reward_functions,
    reward_inputs,
)
from posttrain.rollout.agent_loop import Episode

REWARDS = '''
calls = []


def length_reward(completions, **kwargs):
    """The TRL docs' example: shorter answers are better. Written for TRL; used as it is."""
    calls.append(kwargs)
    return [-len(completion[0]["content"]) / 100 for completion in completions]


def exact_answer(completions, answer, **kwargs):
    return [1.0 if c[-1]["content"].strip() == str(a) else 0.0 for c, a in zip(completions, answer)]


def fragile(completions, **kwargs):
    return [1.0 / len(c[-1]["content"]) for c in completions]  # ZeroDivisionError on an empty answer


def wrong_length(completions, **kwargs):
    return [1.0]


def wrong_type(completions, **kwargs):
    return ["high"] * len(completions)


def no_kwargs(completions):
    return [0.0] * len(completions)


def scaled(completions, factor, **kwargs):
    return [factor] * len(completions)
'''


@pytest.fixture
def rewards_file(tmp_path) -> str:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS)
    return str(path)


def episode(reply: str, env: str = "math", **fields) -> Episode:
    task = {"id": f"t-{reply}", "env": env, "messages": [{"role": "user", "content": "Q?"}], "tools": [], **fields}
    messages = [*task["messages"], {"role": "assistant", "content": reply}]
    return Episode(task=task, sample_index=0, messages=messages, token_ids=[1, 2, 3, 4], mask=[0, 0, 1, 1],
                   logprobs=[0.0] * 4, prompt_len=2, finish_reasons=["stop"], end_reason="done")


def spec(file: str, function: str, **kw) -> RewardFunctionSpec:
    return RewardFunctionSpec(function=f"{file}:{function}", **kw)


def test_a_trl_reward_function_is_called_as_trl_calls_it(rewards_file) -> None:
    fn = FunctionReward(spec(rewards_file, "length_reward"))
    assert fn.__name__ == "length_reward"
    eps = [episode("42"), episode("forty-two", answer="42")]
    logged: dict[str, float] = {}
    out = fn(prompts=["ignored"], completions=["ignored"], episode=eps, env=["math", "math"], bucket=["a", "b"],
             trainer_state="state", log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [-0.02, -0.09] and logged == {"rewards/length_reward/errors": 0.0}
    seen = fn.fn.__globals__["calls"][-1]
    assert seen["trainer_state"] == "state" and seen["bucket"] == ["a", "b"] and seen["env"] == ["math", "math"]
    assert seen["answer"] == [None, "42"] and seen["id"] == ["t-42", "t-forty-two"]  # task fields as columns
    assert seen["prompts"][0] == [{"role": "user", "content": "Q?"}] and seen["completion_ids"] == [[3, 4], [3, 4]]
    assert seen["episode"] == eps and seen["task"] == [e.task for e in eps]


def test_dotted_paths_task_fields_env_filters_and_kwargs(rewards_file, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    exact = FunctionReward(RewardFunctionSpec(function="my_rewards.exact_answer"))
    assert exact.score([episode("42", answer=42), episode("7", answer=42)]) == [1.0, 0.0]
    only_code = FunctionReward(spec(rewards_file, "exact_answer", envs=["code"]))
    assert only_code.score([episode("42", answer=42), episode("42", env="code", answer=42)]) == [None, 1.0]
    assert FunctionReward(spec(rewards_file, "scaled", kwargs={"factor": 0.5})).score([episode("x")]) == [0.5]


def test_bad_specs_and_bad_return_values_are_user_errors(rewards_file, tmp_path) -> None:
    for function, match in [(f"{tmp_path}/nowhere.py:f", "file not found"), (f"{rewards_file}:missing", "has no"),
                            (f"{rewards_file}", "name the object"), ("not_a_module_xyz:f", "no module named"),
                            (f"{rewards_file}:no_kwargs", r"must accept \*\*kwargs"),
                            (f"{rewards_file}:calls", "not callable")]:
        with pytest.raises(UserError, match=match):
            FunctionReward(RewardFunctionSpec(function=function))
    with pytest.raises(UserError, match=r"returned 1 values for 2 episodes"):
        FunctionReward(spec(rewards_file, "wrong_length")).score([episode("a"), episode("b")])
    with pytest.raises(UserError, match=r"returned 'high' for completion 0; expected a float or None"):
        FunctionReward(spec(rewards_file, "wrong_type")).score([episode("a")])
    with pytest.raises(UserError, match="two rewards are named 'length_reward'"):
        CombinedReward(RewardFunctions(functions=[spec(rewards_file, "length_reward")] * 2))
    named = [spec(rewards_file, "length_reward"), spec(rewards_file, "length_reward", name="again")]
    assert len(CombinedReward(RewardFunctions(functions=named)).functions) == 2


def test_a_function_that_crashes_on_some_output_scores_those_zero_and_counts_them(rewards_file) -> None:
    fn = FunctionReward(spec(rewards_file, "fragile"))
    logged: dict[str, float] = {}
    out = fn.score([episode("ab"), episode(""), episode("abcd")], log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [0.5, 0.0, 0.25] and fn.errors == 1 and "ZeroDivisionError" in fn.first_error
    assert logged["rewards/fragile/errors"] == 1.0
    assert fn.score([episode("")]) == [0.0] and fn.errors == 2


def test_env_rewards_and_functions_combine_by_weights(rewards_file) -> None:
    settings = RewardFunctions(weights={"math": 2.0}, functions=[
        spec(rewards_file, "exact_answer", weight=0.5), spec(rewards_file, "length_reward", weight=1.0,
                                                             envs=["code"])])
    combined = CombinedReward(settings).score([episode("42", answer=42), episode("42", env="code", answer=1)],
                                              scores=[1.0, 1.0], envs=["math", "code"], buckets=["m", "c"])
    assert combined[0] == (2.0 + 0.5, {"exact_answer": 1.0, "length_reward": None})
    assert combined[1] == (1.0 + 0.0 - 0.02, {"exact_answer": 0.0, "length_reward": -0.02})
    funcs, weights = reward_functions(["math"], {"math": object()},
                                      RewardSettings(functions=[spec(rewards_file, "exact_answer", weight=3.0)]))
    assert [f.__name__ for f in funcs] == ["math", "format", "exact_answer"] and weights == [1.0, 1.0, 3.0]
    with pytest.raises(UserError, match="two rewards are named 'math'"):
        reward_functions(["math"], {"math": object()},
                         RewardSettings(functions=[spec(rewards_file, "exact_answer", name="math")]))


def test_the_reward_files_are_inputs_of_the_run(rewards_file) -> None:
    settings = RewardFunctions(functions=[spec(rewards_file, "exact_answer")])
    before = reward_inputs(settings)
    assert list(before) == [f"reward:{rewards_file}:exact_answer"]
    Path(rewards_file).write_text(REWARDS + "\n# edited\n")
    assert reward_inputs(settings) != before


def test_selection_by_reward() -> None:
    samples = [{"sample_index": i, "passed": True, "truncated": False, "score": 1.0, "reward": r, "prompt_messages": 1,
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"a{i}"}],
                "model_tokens": 5} for i, r in enumerate([0.2, 0.9, 0.5])]
    kept, dropped = select(samples, SelectionConfig(min_reward=0.4))
    assert kept == [1, 2] and dropped == {0: "low_reward"}
    kept, dropped = select(samples, SelectionConfig(policy="best_k", k=1))
    assert kept == [1] and dropped == {2: "beyond_k", 0: "beyond_k"}


# ---- the judge behind an OpenAI-compatible endpoint ----------------------------------------------------------------

class JudgeServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint serving model "judge": it rates a reply by its number of words (at most 10),
    answers "no idea" when the reply says "mumble", and fails with HTTP 500 when it says "crash"."""

    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep the test output clean
        return None

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer secret-key":
            return self._send(401, {"error": {"message": "bad key", "type": "auth"}})
        self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model", "owned_by": "test"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeServer.requests.append(body)
        text = body["messages"][-1]["content"]
        reply = text.split("Assistant's reply:\n", 1)[1].split("\n\nAnswer with", 1)[0]
        if "crash" in reply:
            return self._send(500, {"error": {"message": "boom", "type": "server"}})
        content = "no idea" if "mumble" in reply else f"{min(10, len(reply.split()))}"
        choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                   for i in range(body.get("n", 1))]
        self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@pytest.fixture
def judge_url(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MY_JUDGE_KEY", "secret-key")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_judge_behind_an_openai_compatible_endpoint(judge_url) -> None:
    from posttrain.preference.scorers import ScorerConfig, open_scorer

    config = ScorerConfig(kind="judge", judge_model="judge", judge_base_url=judge_url, judge_api_key_env="MY_JUDGE_KEY",
                          judge_max_retries=0, judge_sampling={"n": 2, "temperature": 0.5, "max_tokens": 4},
                          judge_template="Rate {low}-{high}.\n{conversation}\nAssistant's reply:\n{response}\n\n"
                                         "Answer with a number.")
    scorer = open_scorer(config)
    prompts = [[{"role": "user", "content": "Say hi {response}"}]] * 4
    scores = scorer.score(prompts, ["hi there friend", "mumble", "please crash", " ".join(["w"] * 30)])
    assert scores == [3.0, None, None, 10.0]
    assert scorer.stats() == {"judged": 4, "unparsed_ratings": 2, "unscored": 2, "endpoint_errors": 1}
    request = JudgeServer.requests[-1]
    assert request["model"] == "judge" and request["n"] == 2 and request["max_tokens"] == 4
    assert "Say hi {response}" in request["messages"][-1]["content"]  # braces in user text are left alone
    scorer.close()

    for changes, match in [({"judge_model": "other"}, r"'other' is not served by .*it serves: judge"),
                           ({"judge_api_key_env": "NO_SUCH_VARIABLE"}, "refused the API key"),
                           ({"judge_base_url": "http://127.0.0.1:9/v1"}, "cannot reach the endpoint")]:
        with pytest.raises(UserError, match=match):
            open_scorer(config.model_copy(update=changes))
    with pytest.raises(ValueError, match="judge_base_url: expected an http"):
        ScorerConfig(kind="judge", judge_model="judge", judge_base_url="localhost:8000")


def test_the_pipeline_fingerprints_a_reward_functions_file(rewards_file) -> None:
    from types import SimpleNamespace

    from posttrain.pipeline.state import stage_inputs

    settings = RewardFunctions(functions=[spec(rewards_file, "exact_answer")])
    found = stage_inputs(SimpleNamespace(extra_inputs=None), settings)
    assert found == {"functions.0.function": rewards_file}
