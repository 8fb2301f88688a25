"""What a simulated API domain is: a state (plain JSON data) plus tools, each a method marked with :func:`tool`.

This is the public contract for your own tool domains (docs/environments.md, "Your tools"):

* ``name``: how tasks refer to the domain (``"domains": {"library": <initial state>}``);
* ``STATE_SCHEMA``: the JSON schema of that state; a task whose state breaks it is refused (a ``UserError``);
* tools: methods marked with ``@tool(description, properties, required)`` (or ``parameters=`` a whole JSON schema);
  each gets an OpenAI function schema, its arguments are validated against it before the method runs, and what it
  returns (JSON data) is the result the model sees;
* :class:`ToolError`: raise it to refuse a request (no such book, insufficient funds); the model sees the message;
* ``snapshot()``: the state as verification compares it (drop id counters and other bookkeeping).

The environment reaches a domain only through :meth:`Domain.tool_table`, a dict from tool name to bound method built
from the methods the class itself marks; a name the model invents (``__init__``, ``_state``) is simply not a key.
:func:`check_domain` checks a class against the contract (it runs when a domain is loaded).
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, ClassVar

import jsonschema

from posttrain.errors import UserError
from posttrain.tool_calls import check_tool_schema

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class ToolError(Exception):
    """A tool refused the request (no such file, insufficient funds): the model sees the message as the result."""


def tool(description: str | None = None, properties: dict[str, Any] | None = None, required: list[str] | None = None,
         *, parameters: dict[str, Any] | None = None):
    """Mark a domain method as a tool and attach its OpenAI function schema.

    ``properties``/``required`` build an object schema without extra keys; ``parameters`` gives the whole JSON
    schema instead. ``description`` defaults to the method's docstring.
    """
    if parameters is not None and (properties is not None or required is not None):
        raise TypeError("tool(): give either properties/required or parameters, not both")

    def mark(fn: Callable) -> Callable:
        text = description if description is not None else inspect.getdoc(fn) or ""
        params = parameters if parameters is not None else {
            "type": "object", "properties": properties or {}, "required": required or [],
            "additionalProperties": False}
        fn.tool_schema = {"type": "function",
                          "function": {"name": fn.__name__, "description": text, "parameters": params}}
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


def check_domain(cls: Any, where: str) -> None:
    """Raise UserError (naming ``where`` and the class) unless ``cls`` fits the domain contract."""
    label = f"{where}: tool domain {getattr(cls, '__name__', cls)!r}"
    if not (isinstance(cls, type) and issubclass(cls, Domain)):
        raise UserError(f"{label}: expected a subclass of envs.tool_calling.Domain")
    if not isinstance(cls.name, str) or not NAME.match(cls.name):
        raise UserError(f"{label}: 'name' must be a short identifier (letters, digits, '_', '.', '-'), got "
                        f"{cls.name!r}")
    if not isinstance(cls.STATE_SCHEMA, dict):
        raise UserError(f"{label}: STATE_SCHEMA must be a JSON schema (a dict)")
    try:
        jsonschema.Draft202012Validator.check_schema(cls.STATE_SCHEMA)
    except jsonschema.SchemaError as e:
        raise UserError(f"{label}: STATE_SCHEMA is not a valid JSON schema: {e.message}") from None
    tools = cls.tool_functions()
    if not tools:
        raise UserError(f"{label}: defines no tools (mark methods with @tool(description, properties, required))")
    for name, fn in tools.items():
        try:
            check_tool_schema(fn.tool_schema)
        except UserError as e:
            raise UserError(f"{label}: tool {name}: {e.message}") from None
        _check_signature(label, name, fn)
    if not callable(getattr(cls, "snapshot", None)):
        raise UserError(f"{label}: snapshot must be a method")


def _check_signature(label: str, name: str, fn: Callable) -> None:
    """The schema's properties must be the method's parameters: otherwise valid arguments would crash the call."""
    params = list(inspect.signature(fn).parameters.values())[1:]  # without self
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    schema = fn.tool_schema["function"].get("parameters") or {}
    props = set(schema.get("properties") or {})
    required = set(schema.get("required") or [])
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(props - accepted)
    if unknown:
        raise UserError(f"{label}: tool {name}: schema properties {unknown} are not parameters of the method")
    needed = sorted(p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                 p.KEYWORD_ONLY))
    optional = sorted(set(needed) - required)
    if optional:
        raise UserError(f"{label}: tool {name}: parameters {optional} have no default but the schema does not "
                        "require them")


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
