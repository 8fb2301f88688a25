"""Your own tool domains in the tool_calling environment: loaded by file or module name from a task's
``domain_modules``, from the env's ``domains`` setting, from a subclass's ``DOMAINS`` and from an installed package's
entry point; played and verified by the same replay-and-compare mechanism as the built-in domains, in this process, in
spawned verifier workers and in a Ray actor. Bad domains are clear errors; a tool that returns something that is not
JSON never crashes an episode or its verification."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from envs.tool_calling import ToolCallingEnv, reference_trajectory
from envs.tool_calling.registry import entry_point_domains
from posttrain.environment import Trajectory, make_env
from posttrain.errors import UserError
from posttrain.tool_calls import format_tool_call

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = str(ROOT / "examples" / "tools" / "library.py")

COUNTER_DOMAIN = '''
from envs.tool_calling import Domain, ToolError, tool


class Counter(Domain):
    name = "counter"
    STATE_SCHEMA = {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"],
                    "additionalProperties": False}

    @tool("Add to the counter.", {"amount": {"type": "integer", "minimum": 1, "maximum": 10}}, ["amount"])
    def add(self, amount):
        if self.state["value"] + amount > 100:
            raise ToolError("the counter cannot go above 100")
        self.state["value"] += amount
        return {"value": self.state["value"]}

    @tool("Read the counter.")
    def read(self):
        return {"value": self.state["value"]}

    @tool("A broken tool: returns a set, which is not JSON.")
    def broken(self):
        return {"values": {1, 2}}

    @tool("A buggy tool.")
    def crash(self):
        raise KeyError("oops")
'''


def counter_task(module: str | None, value: int = 5, add: int = 3) -> dict:
    from envs.tool_calling.registry import load_domains

    spec = module or "counter"
    schemas = load_domains([module])["counter"].tool_schemas() if module else []
    turn = {"user": f"Add {add} to the counter and tell me the new value.",
            "steps": [[{"name": "add", "arguments": {"amount": add}}]],
            "reply": f"The counter is now {value + add}.", "facts": [[str(value + add)]], "possible": True}
    task = {"id": f"counter-{spec}-{value}-{add}", "env": "tool_calling", "tools": schemas,
            "messages": [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": turn["user"]}],
            "domains": {"counter": {"value": value}}, "turns": [turn], "max_turns": 4}
    if module:
        task["domain_modules"] = [module]
    return task


@pytest.fixture
def counter_file(tmp_path) -> str:
    path = tmp_path / "counter_domain.py"
    path.write_text(COUNTER_DOMAIN)
    return str(path)


def library_tasks(n: int = 12, seed: int = 0) -> list[dict]:
    return list(make_env(LIBRARY).generate_tasks(n, seed))


def test_the_example_library_domain_plays_and_verifies_like_a_built_in_one() -> None:
    tasks = library_tasks(30)
    assert {t["kind"] for t in tasks} == {"multi_call", "impossible"}
    assert all(t["env"] == "tool_calling" and [Path(p).resolve() for p in t["domain_modules"]] == [Path(LIBRARY)]
               for t in tasks)
    env = make_env("tool_calling")
    for task in tasks:
        messages = reference_trajectory(task)
        assert env.verify(Trajectory(task, messages)).passed, task["id"]
    # replay and compare: lending to another member is a different end state
    task = next(t for t in tasks if t["id"].startswith("tc-library-multi_call") and "borrow" in t["messages"][-1]
                ["content"])
    messages = reference_trajectory(task)
    call = task["turns"][0]["steps"][1][0]
    member = next(m for m in task["domains"]["library"]["members"] if m != call["arguments"]["member"])
    wrong = {**call["arguments"], "member": member}
    at = next(i for i, m in enumerate(messages) if m["role"] == "assistant" and '"check_out"' in m["content"])
    messages[at] = {"role": "assistant", "content": format_tool_call("check_out", wrong)}
    result = env.verify(Trajectory(task, messages))
    assert not result.passed and result.reasons == ["state_mismatch"]


def test_domains_from_the_env_setting_a_module_name_and_a_subclass(counter_file, tmp_path, monkeypatch) -> None:
    task = counter_task(counter_file)
    bare = {k: v for k, v in task.items() if k != "domain_modules"}
    with pytest.raises(UserError, match=r"unknown domains \['counter'\].*domain_modules"):
        ToolCallingEnv().reset(bare)
    env = make_env("tool_calling", domains=[counter_file])  # what `envs: {tool_calling: {domains: [...]}}` gives
    assert env.verify(Trajectory(bare, reference_trajectory(bare, env))).passed

    monkeypatch.syspath_prepend(str(tmp_path))
    by_name = counter_task("counter_domain")  # a module on the Python path
    assert ToolCallingEnv().verify(Trajectory(by_name, reference_trajectory(by_name))).passed
    by_class = counter_task(f"{counter_file}:Counter")
    assert ToolCallingEnv().verify(Trajectory(by_class, reference_trajectory(by_class))).passed

    from examples.tools.library import Library, LibraryEnv

    assert LibraryEnv().domains["library"] is Library
    plain = tmp_path / "no_domains.py"  # a module that imports fine but defines no Domain subclass
    plain.write_text("VALUE = 1\n")
    with pytest.raises(UserError, match="defines no tool domain"):
        ToolCallingEnv(domains=[str(plain)])


def test_bad_domains_are_clear_errors(tmp_path) -> None:
    def domain_file(name: str, body: str) -> str:
        path = tmp_path / f"{name}.py"
        path.write_text("from envs.tool_calling import Domain, ToolError, tool\n\n" + textwrap.dedent(body))
        return str(path)

    cases = {
        "no tools": (domain_file("empty", "class Empty(Domain):\n    name = 'empty'\n"), "defines no tools"),
        "bad schema": (domain_file("badschema", """
            class Bad(Domain):
                name = "bad"
                STATE_SCHEMA = {"type": "nonsense"}

                @tool("x")
                def x(self):
                    return 1
            """), "STATE_SCHEMA is not a valid JSON schema"),
        "signature": (domain_file("sig", """
            class Sig(Domain):
                name = "sig"

                @tool("x", {"a": {"type": "integer"}}, [])
                def x(self, a):
                    return a
            """), r"parameters \['a'\] have no default but the schema does not require them"),
        "unknown property": (domain_file("prop", """
            class Prop(Domain):
                name = "prop"

                @tool("x", {"b": {"type": "integer"}}, ["b"])
                def x(self):
                    return 1
            """), r"schema properties \['b'\] are not parameters"),
        "taken name": (domain_file("taken", """
            class MyBank(Domain):
                name = "bank"

                @tool("x")
                def x(self):
                    return 1
            """), "domain name 'bank' is already taken"),
        "import error": (domain_file("broken", "import not_a_module_at_all\n"), r"importing it failed.*not_a_module"),
        "missing file": (str(tmp_path / "nowhere.py"), "file not found"),
    }
    for label, (spec, match) in cases.items():
        with pytest.raises(UserError, match=match):
            ToolCallingEnv(domains=[spec])
        # the same problem in a task record: a bad_task verdict with the message, never a pass or a crash
        task = {**counter_task(None), "domain_modules": [spec]}
        result = ToolCallingEnv().verify(Trajectory(task, task["messages"]))
        assert not result.passed and result.reasons == ["bad_task"] and result.error, label
    empty = {"books": [], "members": [], "loans": []}
    bad_state = {**counter_task(None), "domain_modules": [LIBRARY], "domains": {"library": empty}}
    with pytest.raises(UserError, match=r"domain 'library' state at books"):
        ToolCallingEnv().reset(bad_state)


def test_a_result_that_is_not_json_or_a_crashing_tool_never_crashes_the_episode_or_its_verification(
        counter_file) -> None:
    from envs.tool_calling.registry import load_domains

    schemas = load_domains([counter_file])["counter"].tool_schemas()
    task = {**counter_task(counter_file), "tools": schemas}
    env = ToolCallingEnv()
    env.reset(task)
    for name in ("broken", "crash"):
        step = env.step({"role": "assistant", "content": format_tool_call(name, {})})
        observation = json.loads(step.observations[0]["content"])
        assert observation["name"] == name and observation["error"].startswith("internal error")
        assert step.info["calls"] == [{"name": name, "status": "internal_error"}]
    assert "not JSON data" in json.loads(env.step({"role": "assistant", "content": format_tool_call(
        "broken", {})}).observations[0]["content"])["error"]
    messages = reference_trajectory(task)
    messages.insert(2, {"role": "assistant", "content": format_tool_call("broken", {})})
    result = env.verify(Trajectory(task, messages))
    assert not result.passed and result.error and "not JSON data" in result.error


def test_domains_load_in_spawned_verifier_workers(counter_file) -> None:
    from posttrain.verify_pool import VerifyPool

    library = library_tasks(4)
    counter = counter_task(counter_file)
    bare = {k: v for k, v in counter.items() if k != "domain_modules"}
    items = [Trajectory(t, reference_trajectory(t)) for t in [*library, counter]]
    with VerifyPool("tool_calling", workers=1, timeout_s=60) as pool:
        assert all(r.passed for r in pool.verify_all(items))
        result = pool.verify_all([Trajectory(bare, items[-1].messages)])[0]
        assert result.reasons == ["bad_task"] and "unknown domains" in result.error
    with VerifyPool("tool_calling", workers=1, timeout_s=60, env_kwargs={"domains": [counter_file]}) as pool:
        assert pool.verify_all([Trajectory(bare, items[-1].messages)])[0].passed
    with pytest.raises(UserError, match="could not start in a verification worker.*file not found"):
        VerifyPool("tool_calling", workers=1, env_kwargs={"domains": ["nowhere/at_all.py"]}).verify_all(items)


def test_domains_load_in_a_ray_actor() -> None:
    import ray

    from posttrain.rollout.workers import start_ray

    tasks = library_tasks(3, seed=4)
    start_ray(num_cpus=1)
    try:
        @ray.remote(num_cpus=0.5)
        class Verifier:
            def verify(self, task: dict, messages: list) -> tuple[bool, list]:
                from posttrain.environment import Trajectory, make_env

                result = make_env("tool_calling").verify(Trajectory(task, messages))
                return result.passed, result.reasons

        actor = Verifier.remote()
        verdicts = ray.get([actor.verify.remote(t, reference_trajectory(t)) for t in tasks])
    finally:
        ray.shutdown()
    assert verdicts == [(True, [])] * 3


def test_an_installed_packages_entry_point_provides_a_domain(counter_file, tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "counter_pkg-1.0.dist-info").mkdir(parents=True)
    (site / "counter_pkg-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: counter-pkg\n"
                                                                 "Version: 1.0\n")
    (site / "counter_pkg-1.0.dist-info" / "entry_points.txt").write_text(
        "[posttrain.tool_domains]\ncounter = counter_pkg_domain:Counter\n")
    (site / "counter_pkg_domain.py").write_text(COUNTER_DOMAIN)
    monkeypatch.syspath_prepend(str(site))
    entry_point_domains.cache_clear()
    try:
        task = {k: v for k, v in counter_task(counter_file).items() if k != "domain_modules"}
        assert ToolCallingEnv().verify(Trajectory(task, reference_trajectory(task))).passed
    finally:
        entry_point_domains.cache_clear()
        sys.modules.pop("counter_pkg_domain", None)


def _doc_block(marker: str) -> str:
    doc = (ROOT / "docs" / "environments.md").read_text()
    block = doc.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    return block.split("```python\n", 1)[1].rsplit("```", 1)[0]


def test_the_domain_and_the_reward_function_in_the_docs_work_as_written(tmp_path) -> None:
    from posttrain.rl.rewards import FunctionReward, RewardFunctionSpec
    from posttrain.rollout.agent_loop import Episode

    (tmp_path / "doc_library.py").write_text(_doc_block("example-domain"))
    state = {"books": {"bk-1": {"title": "Winter Bees", "author": "Tom Hale", "copies": 1}}, "loans": [],
             "members": ["Ana"]}
    turn = {"user": "Lend Winter Bees (bk-1) to Ana and tell me how many copies are left.",
            "steps": [[{"name": "check_out", "arguments": {"book_id": "bk-1", "member": "Ana"}}]],
            "reply": "Done: 0 copies left.", "facts": [["0"]], "possible": True}
    env = ToolCallingEnv(domains=[str(tmp_path / "doc_library.py")])
    task = {"id": "doc", "env": "tool_calling", "domains": {"library": state}, "turns": [turn], "max_turns": 4,
            "tools": env.domains["library"].tool_schemas(),
            "messages": [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": turn["user"]}]}
    assert env.verify(Trajectory(task, reference_trajectory(task, env))).passed

    (tmp_path / "my_rewards.py").write_text(_doc_block("example-reward"))
    ep = Episode(task={"id": "t", "messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}, sample_index=0,
                 messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    for name, expected in (("brevity", -0.001), ("exact", 1.0)):
        fn = FunctionReward(RewardFunctionSpec(function=f"{tmp_path / 'my_rewards.py'}:{name}"))
        assert fn.score([ep]) == [expected]


def test_the_code_files_tasks_name_are_inputs_of_a_run(counter_file, built_dataset_writer, tmp_path) -> None:
    from posttrain.tasks import TasksConfig, load_tasks

    task = counter_task(counter_file)
    folder = built_dataset_writer(tmp_path / "tasks", "task", [
        {"env": "tool_calling", "messages": task["messages"], "tools": json.dumps(task["tools"]),
         "task": json.dumps(task)}])
    _, before = load_tasks(TasksConfig(dataset=str(folder)), tmp_path / "build")
    assert f"tasks:file:{counter_file}" in before
    Path(counter_file).write_text(COUNTER_DOMAIN + "\n# edited\n")
    _, after = load_tasks(TasksConfig(dataset=str(folder)), tmp_path / "build")
    assert after[f"tasks:file:{counter_file}"] != before[f"tasks:file:{counter_file}"]
