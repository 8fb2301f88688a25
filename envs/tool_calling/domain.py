"""What a simulated API domain is: a state (plain JSON data) plus tools, each a method marked with :func:`tool`.

The environment reaches a domain only through :meth:`Domain.tool_table`, a dict from tool name to bound method built
from the methods the class itself marks; a name the model invents (``__init__``, ``_state``) is simply not a key.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jsonschema

from posttrain.errors import UserError


class ToolError(Exception):
    """A tool refused the request (no such file, insufficient funds): the model sees the message as the result."""


def tool(description: str, properties: dict[str, Any] | None = None, required: list[str] | None = None):
    """Mark a domain method as a tool and attach its OpenAI function schema."""
    def mark(fn: Callable) -> Callable:
        fn.tool_schema = {
            "type": "function",
            "function": {
                "name": fn.__name__,
                "description": description,
                "parameters": {"type": "object", "properties": properties or {}, "required": required or [],
                               "additionalProperties": False},
            },
        }
        return fn
    return mark


@functools.cache
def _state_validator(domain_cls: type[Domain]) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(domain_cls.STATE_SCHEMA)


class Domain:
    """Base of the simulated APIs. Subclasses set ``name`` and ``STATE_SCHEMA`` and mark tools with :func:`tool`."""

    name: ClassVar[str] = ""
    STATE_SCHEMA: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, state: dict[str, Any]) -> None:
        errors = sorted(_state_validator(type(self)).iter_errors(state), key=str)
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
            raise UserError(f"domain {self.name!r} state at {where}: {errors[0].message}")
        self.state = copy.deepcopy(state)

    @classmethod
    def tool_functions(cls) -> dict[str, Callable]:
        """The marked methods, in definition order (walking the class's own namespace, not model input)."""
        found: dict[str, Callable] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                if callable(attr) and hasattr(attr, "tool_schema"):
                    found[attr.tool_schema["function"]["name"]] = attr
        return found

    @classmethod
    def tool_schemas(cls) -> list[dict[str, Any]]:
        return [copy.deepcopy(fn.tool_schema) for fn in cls.tool_functions().values()]

    def tool_table(self) -> dict[str, Callable[..., Any]]:
        """The allow-list: tool name -> bound method."""
        return {name: fn.__get__(self, type(self)) for name, fn in self.tool_functions().items()}

    def snapshot(self) -> Any:
        """The state as compared by verification: subclasses drop bookkeeping such as id counters."""
        return copy.deepcopy(self.state)


# -- money: kept in integer cents so balances compare exactly -----------------------------------------------------

def to_cents(amount: float) -> int:
    cents = round(amount * 100)
    if abs(amount * 100 - cents) > 1e-6:
        raise ToolError(f"amount {amount} has more than two decimal places")
    return cents


def dollars(cents: int) -> float:
    return round(cents / 100, 2)


def money_text(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


AMOUNT = {"type": "number", "exclusiveMinimum": 0, "description": "Amount in dollars, at most two decimals."}
DATE = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "YYYY-MM-DD"}
TIME = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "description": "HH:MM, 24-hour"}
