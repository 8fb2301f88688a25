"""The shape scenario templates produce: user turns with the reference calls and reply for each.

A scenario becomes a task record in :mod:`envs.tool_calling.tasks`. Each turn's ``steps`` are the assistant messages
that call tools, in order (calls inside one step are independent of each other); ``reply`` is the text the assistant
ends the turn with; ``facts`` must appear in the assistant's text for that turn (each fact is a list of accepted
spellings). A turn with ``possible=False`` cannot be done with the tools and details given: no call is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Turn:
    user: str
    steps: list[list[dict[str, Any]]] = field(default_factory=list)
    reply: str = ""
    facts: list[list[str]] = field(default_factory=list)
    possible: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Scenario:
    kind: str  # single_call | multi_call | multi_turn | impossible
    domains: dict[str, dict[str, Any]]  # domain name -> initial state
    turns: list[Turn]
    withheld_tools: list[str] = field(default_factory=list)  # tools the task does not offer (missing-tool tasks)


def call(tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    return {"name": tool_name, "arguments": arguments}


def fact(*spellings: str) -> list[str]:
    return list(spellings)


OPENERS = ["", "Hi! ", "Hello. ", "Quick question: ", "Hey, ", "Could you help me? ", "Good morning! ", "Please: "]


def opener(rng: Any) -> str:
    """A greeting or none, so that first user messages vary like real ones do."""
    return rng.choice(OPENERS)
