"""The tool_calling task generator, the simulated domains' tools, and fact matching."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from envs.math.tasks import generate_tasks as math_tasks
from envs.tool_calling import ToolCallingEnv, reference_trajectory
from envs.tool_calling.banking import Bank
from envs.tool_calling.domain import ToolError
from envs.tool_calling.filesystem import FileSystem
from envs.tool_calling.messaging import Messaging
from envs.tool_calling.scheduling import Calendar
from envs.tool_calling.shop import Shop
from envs.tool_calling.verify import has_fact
from envs.tool_calling.world import DOMAINS
from posttrain.environment import Trajectory
from posttrain.errors import UserError
from posttrain.tool_calls import check_tool_schema, tool_name


@pytest.fixture(scope="module")
def tasks():
    return list(ToolCallingEnv().generate_tasks(2000, seed=0))


def test_generator_is_deterministic_and_distinct(tasks):
    assert tasks == list(ToolCallingEnv().generate_tasks(2000, seed=0))
    assert [t["id"] for t in ToolCallingEnv().generate_tasks(20, seed=1)] != [t["id"] for t in tasks[:20]]
    assert len({t["id"] for t in tasks}) == 2000
    assert len({t["messages"][-1]["content"] for t in tasks}) == 2000
    with pytest.raises(UserError):
        list(ToolCallingEnv().generate_tasks(-1, seed=0))


def test_generator_covers_domains_and_kinds(tasks):
    kinds = Counter(t["kind"] for t in tasks)
    assert set(kinds) == {"single_call", "multi_call", "multi_turn", "impossible"}
    assert min(kinds.values()) > 150
    domains = Counter(d for t in tasks for d in t["domains"])
    assert set(domains) == set(DOMAINS) and min(domains.values()) > 200
    assert sum(len(t["domains"]) > 1 for t in tasks) > 100
    for t in tasks:
        offered = {tool_name(s) for s in t["tools"]}
        referenced = {c["name"] for turn in t["turns"] for step in turn["steps"] for c in step}
        assert referenced <= offered
        if t["kind"] == "multi_turn":
            assert len(t["turns"]) >= 2
        if t["kind"] == "impossible":
            assert not any(turn["possible"] for turn in t["turns"]) and not referenced
        if t["kind"] == "multi_call":
            assert sum(len(step) for step in t["turns"][0]["steps"]) >= 2
    withheld = [t for t in tasks if t["kind"] == "impossible"
                and len(t["tools"]) < sum(len(DOMAINS[d].tool_schemas()) for d in t["domains"])]
    assert withheld  # some impossible tasks lack the tool they would need


def test_tasks_survive_jsonl_and_references_still_pass(tasks):
    sample = [json.loads(json.dumps(t)) for t in tasks[:150]]
    env = ToolCallingEnv()
    for t in sample:
        messages = reference_trajectory(t)
        assert json.loads(json.dumps(messages)) == messages
        assert env.verify(Trajectory(t, messages)).passed, t["id"]


def test_tool_schemas_are_valid_and_names_unique():
    names = [tool_name(s) for cls in DOMAINS.values() for s in cls.tool_schemas()]
    assert len(names) == len(set(names)) and len(names) >= 25
    for cls in DOMAINS.values():
        for schema in cls.tool_schemas():
            check_tool_schema(schema)
            assert schema["function"]["description"]


@pytest.mark.parametrize("text, spellings, found", [
    ("Your balance is $1,234.50.", ["1234.50"], True),
    ("Your balance is 1234.5", ["1234.50"], False),
    ("It has 123 items", ["12"], False),
    ("It costs 12.50", ["12"], False),
    ("It costs 12.", ["12"], True),
    ("event EVT-41 booked", ["evt-41"], True),
    ("event evt-412 booked", ["evt-41"], False),
    ("starts at 9:30", ["09:30", "9:30"], True),
    ("password is otter-maple-42!", ["otter-maple-42"], True),
])
def test_fact_matching(text, spellings, found):
    assert has_fact(text, spellings) is found


def test_file_system_tools():
    fs = FileSystem({"files": {"/a/x.txt": "hello"}})
    assert fs.list_files("/a") == {"directory": "/a", "files": ["/a/x.txt"]}
    for bad in ["relative.txt", "/a/../etc/passwd", "/a/", "/a//b"]:
        with pytest.raises(ToolError, match="invalid path"):
            fs.write_file(bad, "x")
    with pytest.raises(ToolError, match="no such file"):
        fs.read_file("/a/y.txt")
    fs.write_file("/a/y.txt", "bye")
    with pytest.raises(ToolError, match="destination exists"):
        fs.move_file("/a/x.txt", "/a/y.txt")
    fs.append_line("/a/x.txt", "again")
    assert fs.read_file("/a/x.txt")["content"] == "hello\nagain\n"
    assert fs.search_files("BYE")["matches"] == ["/a/y.txt"]
    with pytest.raises(UserError, match="domain 'files' state at files/n"):
        FileSystem({"files": {"n": 3}})


def test_calendar_tools():
    cal = Calendar({"events": {"evt-1": {"title": "Gym", "date": "2025-03-03", "start": "09:00", "end": "10:00"}},
                    "next_id": 2})
    with pytest.raises(ToolError, match="conflicts with evt-1"):
        cal.create_event("Call", "2025-03-03", "09:30", "10:30")
    with pytest.raises(ToolError, match="not a real date"):
        cal.create_event("Call", "2025-02-30", "09:30", "10:30")
    with pytest.raises(ToolError, match="must be after"):
        cal.create_event("Call", "2025-03-03", "11:00", "10:30")
    assert cal.create_event("Call", "2025-03-03", "10:00", "10:30")["event_id"] == "evt-2"
    cal.reschedule_event("evt-1", "2025-03-03", "08:00", "09:30")  # may overlap its own old slot
    assert [e["title"] for e in cal.list_events("2025-03-03")["events"]] == ["Gym", "Call"]


def test_bank_tools():
    bank = Bank({"accounts": {"checking": {"balance_cents": 10_000}, "savings": {"balance_cents": 0}},
                 "payees": {"p": "Power"}, "transactions": [], "next_id": 1})
    with pytest.raises(ToolError, match="more than two decimal"):
        bank.transfer("checking", "savings", 1.234)
    with pytest.raises(ToolError, match="same account"):
        bank.transfer("checking", "checking", 1)
    with pytest.raises(ToolError, match="insufficient funds"):
        bank.transfer("checking", "savings", 100.01)
    assert bank.transfer("checking", "savings", 0.29)["source_balance"] == 99.71  # no float drift: integer cents
    assert bank.pay_bill("checking", "p", 9.71)["balance"] == 90.0
    with pytest.raises(ToolError, match="no such payee"):
        bank.pay_bill("checking", "q", 1)
    assert [t["kind"] for t in bank.list_transactions("checking")["transactions"]] == ["bill", "transfer"]


def test_shop_tools():
    shop = Shop({"products": {"p-1": {"name": "Mug", "price_cents": 350, "stock": 2}}, "cart": {}, "orders": {},
                 "next_order": 7})
    with pytest.raises(ToolError, match="cart is empty"):
        shop.checkout("1 Main St")
    with pytest.raises(ToolError, match="only 2"):
        shop.set_cart_quantity("p-1", 3)
    shop.set_cart_quantity("p-1", 2)
    assert shop.checkout("1 Main St") == {"order_id": "ord-7", "total": 7.0}
    assert shop.search_products("mug")["products"][0]["stock"] == 0
    assert shop.cancel_order("ord-7")["refund"] == 7.0
    with pytest.raises(ToolError, match="only placed orders"):
        shop.cancel_order("ord-7")
    assert shop.state["products"]["p-1"]["stock"] == 2


def test_messaging_tools_and_text_normalisation():
    state = {"contacts": {"al": {"name": "Al Bo", "phone": "1"}}, "inbox": [
        {"id": "msg-1", "from": "al", "text": "hi", "read": False}], "sent": [], "next_id": 1}
    a, b = Messaging(state), Messaging(state)
    with pytest.raises(ToolError, match="no such contact"):
        a.send_message("bob", "x")
    a.send_message("al", "See you  at 5.")
    b.send_message("al", " See you at 5. ")
    assert a.snapshot() == b.snapshot()
    a.mark_read("msg-1")
    assert a.read_inbox(unread_only=True)["messages"] == [] and a.snapshot() != b.snapshot()
    assert state["inbox"][0]["read"] is False  # domains work on their own copy of the task's state


def test_generators_do_not_depend_on_hash_randomisation():
    """Same tasks in a process with another PYTHONHASHSEED (no set/dict-order leaks into the generators)."""
    code = ("import json, hashlib\n"
            "from envs.tool_calling.tasks import generate_tasks as tc\n"
            "from envs.math.tasks import generate_tasks as m\n"
            "print(hashlib.sha256(json.dumps([list(tc(300, 5)), list(m(300, 5))]).encode()).hexdigest())\n")
    digests = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parents[1], env={**os.environ, "PYTHONHASHSEED": hash_seed})
        digests.add(out.stdout.strip())
    here = hashlib.sha256(json.dumps([list(ToolCallingEnv().generate_tasks(300, 5)),
                                      list(math_tasks(300, 5))]).encode()).hexdigest()
    assert digests == {here}
