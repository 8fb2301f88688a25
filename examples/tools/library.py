"""An example tool domain of your own: a small lending library (docs/environments.md, "Your tools").

The file is both things a user writes:

* a **domain** (``Library``): its JSON state and schema, four tools, a snapshot for verification, ``ToolError`` for
  refusals. Tasks use it by naming this file in ``domain_modules``; the built-in ``tool_calling`` environment then
  plays and verifies them (in the driver, in spawned verifier workers, in Ray actors);
* an **environment plugin** (``LibraryEnv``) whose only job is to generate such tasks:
  ``posttrain envs generate examples/tools/library.py --n 50 --out library_tasks.jsonl``.

Nothing in posttrain's source changes for it.
"""

from __future__ import annotations

import os
import random
from typing import Any

from envs.tool_calling import Domain, ToolCallingEnv, ToolError, tool
from envs.tool_calling.scenario import Scenario, Turn, call, fact, opener
from envs.tool_calling.tasks import make_task

BOOK_ID = {"type": "string", "pattern": "^bk-[0-9]+$", "description": "Book id, e.g. bk-12"}
MEMBER = {"type": "string", "description": "The member's name"}
LOAN_LIMIT = 3


class Library(Domain):
    name = "library"
    STATE_SCHEMA = {
        "type": "object",
        "properties": {
            "books": {"type": "object", "additionalProperties": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "author": {"type": "string"},
                               "copies": {"type": "integer", "minimum": 0}},
                "required": ["title", "author", "copies"], "additionalProperties": False}},
            "members": {"type": "array", "items": {"type": "string"}},
            "loans": {"type": "array", "items": {
                "type": "object", "properties": {"book_id": {"type": "string"}, "member": {"type": "string"}},
                "required": ["book_id", "member"], "additionalProperties": False}},
        },
        "required": ["books", "members", "loans"],
        "additionalProperties": False,
    }

    def _book(self, book_id: str) -> dict[str, Any]:
        if book_id not in self.state["books"]:
            raise ToolError(f"no such book: {book_id}")
        return self.state["books"][book_id]

    def _member(self, member: str) -> str:
        if member not in self.state["members"]:
            raise ToolError(f"{member} is not a member of the library")
        return member

    @tool("Find books whose title or author contains the text (case-insensitive).",
          {"text": {"type": "string", "minLength": 2}}, ["text"])
    def search_books(self, text: str) -> dict[str, Any]:
        hits = [{"book_id": k, **v} for k, v in sorted(self.state["books"].items())
                if text.lower() in v["title"].lower() or text.lower() in v["author"].lower()]
        return {"books": hits}

    @tool("Lend a copy of a book to a member.", {"book_id": BOOK_ID, "member": MEMBER}, ["book_id", "member"])
    def check_out(self, book_id: str, member: str) -> dict[str, Any]:
        book, member = self._book(book_id), self._member(member)
        if book["copies"] == 0:
            raise ToolError(f"no copy of {book['title']!r} is available")
        if sum(loan["member"] == member for loan in self.state["loans"]) >= LOAN_LIMIT:
            raise ToolError(f"{member} already has {LOAN_LIMIT} books on loan")
        book["copies"] -= 1
        self.state["loans"].append({"book_id": book_id, "member": member})
        return {"book_id": book_id, "title": book["title"], "copies_left": book["copies"]}

    @tool("Take back a book a member has on loan.", {"book_id": BOOK_ID, "member": MEMBER}, ["book_id", "member"])
    def return_book(self, book_id: str, member: str) -> dict[str, Any]:
        loan = {"book_id": book_id, "member": self._member(member)}
        if loan not in self.state["loans"]:
            raise ToolError(f"{member} has not borrowed {book_id}")
        self.state["loans"].remove(loan)
        self._book(book_id)["copies"] += 1
        return {"returned": book_id}

    @tool("The books a member has on loan.", {"member": MEMBER}, ["member"])
    def list_loans(self, member: str) -> dict[str, Any]:
        self._member(member)
        mine = [loan["book_id"] for loan in self.state["loans"] if loan["member"] == member]
        return {"member": member, "books": [{"book_id": b, "title": self.state["books"][b]["title"]} for b in mine]}

    def snapshot(self) -> Any:
        # What verification compares: copies per book and who has what; the order of the loan list does not matter.
        return {"copies": {k: v["copies"] for k, v in self.state["books"].items()},
                "loans": sorted((loan["book_id"], loan["member"]) for loan in self.state["loans"])}


# -- tasks ----------------------------------------------------------------------------------------------------------

CATALOGUE = [("The Silent River", "Ana Lima"), ("Stars Over Oslo", "Per Berg"),
             ("A Short History of Salt", "Ravi Nair"), ("The Glass Orchard", "Mina Cho"),
             ("Night Train to Porto", "Leo Alves"),
             ("Small Gods of the Kitchen", "June Park"), ("The Cartographer's Daughter", "Ines Roca"),
             ("Winter Bees", "Tom Hale")]
MEMBERS = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima"]


def random_library(rng: random.Random) -> dict[str, Any]:
    ids = rng.sample(range(10, 99), len(CATALOGUE))
    books = {f"bk-{i}": {"title": t, "author": a, "copies": rng.randint(0, 3)} for i, (t, a) in zip(ids, CATALOGUE,
                                                                                                    strict=True)}
    return {"books": books, "members": rng.sample(MEMBERS, 4), "loans": []}


def borrow(rng: random.Random) -> Scenario:
    state = random_library(rng)
    book_id = rng.choice([b for b, v in state["books"].items() if v["copies"] > 0] or sorted(state["books"]))
    state["books"][book_id]["copies"] = max(1, state["books"][book_id]["copies"])
    book, member = state["books"][book_id], rng.choice(state["members"])
    left = book["copies"] - 1
    return Scenario("multi_call", {"library": state}, [Turn(
        f"{member} wants to borrow '{book['title']}'. Please lend it and tell me how many copies are left.",
        [[call("search_books", text=book["title"])], [call("check_out", book_id=book_id, member=member)]],
        f"Done: {member} has '{book['title']}' ({book_id}); {left} copies are left.", [fact(str(left))])])


def give_back(rng: random.Random) -> Scenario:
    state = random_library(rng)
    member = rng.choice(state["members"])
    book_id = rng.choice(sorted(state["books"]))
    state["loans"].append({"book_id": book_id, "member": member})
    title = state["books"][book_id]["title"]
    return Scenario("multi_call", {"library": state}, [Turn(
        f"{member} is returning a book. Check what they have on loan, take it back, and tell me its title.",
        [[call("list_loans", member=member)], [call("return_book", book_id=book_id, member=member)]],
        f"{member} returned '{title}'.", [fact(title)])])


def not_a_member(rng: random.Random) -> Scenario:
    state = random_library(rng)
    stranger = rng.choice([m for m in MEMBERS if m not in state["members"]])
    return Scenario("impossible", {"library": state}, [Turn(
        f"Renew {stranger}'s library card for another year.", [],
        "I can't renew cards: my tools only search, lend and take back books.", possible=False)])


SCENARIOS = [borrow, give_back, not_a_member]


def module_spec() -> str:
    """How tasks name this file: relative to the current folder when it is below it, else absolute."""
    here = os.path.abspath(__file__)
    relative = os.path.relpath(here)
    return here if relative.startswith("..") else relative


class LibraryEnv(ToolCallingEnv):
    """Generates library tasks (played and verified by the built-in ``tool_calling`` env with this file as a domain
    module); it can also play them itself."""

    name = "library"
    description = "Lending-library tasks for the tool_calling environment (an example of your own tool domain)."
    DOMAINS = (Library,)

    def generate_tasks(self, n: int, seed: int):
        rng = random.Random(seed)
        seen: set[str] = set()
        for _ in range(200 * n):
            if len(seen) == n:
                break
            scenario = rng.choice(SCENARIOS)(rng)
            scenario.turns[0].user = opener(rng) + scenario.turns[0].user
            task = make_task(scenario, {"library": Library}, env="tool_calling", domain_modules=[module_spec()])
            if task["id"] in seen:
                continue
            seen.add(task["id"])
            yield task
