"""Which tool domains a task can use: the built-in five, and your own, loaded by module name or file path.

Your domains come from three places, all resolved the same way in every process that plays or verifies a task (the
driver, spawned verifier workers, Ray actors), because each of them loads the module itself:

* the task record: ``"domain_modules": ["mypkg.library", "tools/library.py:Library"]`` (a task file that carries
  everything it needs);
* the environment's constructor: ``ToolCallingEnv(domains=[...])``, i.e. ``envs: {tool_calling: {domains: [...]}}`` in
  a stage config (for every task of a run);
* a subclass: ``class LibraryEnv(ToolCallingEnv): DOMAINS = (Library,)``;
* an installed package's entry point in the group ``posttrain.tool_domains`` (``library = "mypkg.library:Library"``),
  looked up when a task names a domain nothing else provides.

A spec is a module (every :class:`Domain` subclass defined in it) or ``module:Class``; a path to a ``.py`` file works
wherever a module does. Two different classes with one name are an error, as is a spec that provides no domain.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from envs.tool_calling.banking import Bank
from envs.tool_calling.domain import Domain, check_domain
from envs.tool_calling.filesystem import FileSystem
from envs.tool_calling.messaging import Messaging
from envs.tool_calling.scheduling import Calendar
from envs.tool_calling.shop import Shop
from posttrain.errors import UserError
from posttrain.plugins import import_plugin, load_object

BUILTIN_DOMAINS: dict[str, type[Domain]] = {cls.name: cls for cls in (FileSystem, Calendar, Bank, Messaging, Shop)}
ENTRY_POINT_GROUP = "posttrain.tool_domains"


@functools.cache
def _load_spec(spec: str) -> tuple[type[Domain], ...]:
    """The domain classes one spec names (cached: a module is imported and checked once per process)."""
    where = f"tool domain module {spec!r}"
    if ":" in spec:  # one class; without a colon the spec is a module (all of its domains)
        found = [load_object(spec, "tool domain")]
    else:
        found = _domains_in(import_plugin(spec, "tool domain module"))
    if not found:
        raise UserError(f"{where}: defines no tool domain (a subclass of envs.tool_calling.Domain with a name)")
    for cls in found:
        check_domain(cls, where)
    return tuple(found)


def _domains_in(module: Any) -> list[type[Domain]]:
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, Domain) and obj is not Domain and obj.__module__ == module.__name__ and obj.name]


def load_domains(specs: Iterable[str], where: str = "domains") -> dict[str, type[Domain]]:
    """Name -> class for every domain the specs provide (UserError naming ``where`` for a bad spec)."""
    if isinstance(specs, str):
        specs = [specs]
    found: dict[str, type[Domain]] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, str):
            raise UserError(f"{where}[{i}]: expected a module name or a .py path, got {type(spec).__name__}")
        try:
            classes = _load_spec(spec)
        except UserError as e:
            raise UserError(f"{where}[{i}]: {e.message}") from None
        for cls in classes:
            _add(found, cls, f"{where}[{i}] ({spec})")
    return found


def _add(found: dict[str, type[Domain]], cls: type[Domain], where: str) -> None:
    other = found.get(cls.name)
    if other is not None and other is not cls:
        raise UserError(f"{where}: domain name {cls.name!r} is already taken by {other.__module__}.{other.__qualname__}"
                        f"; give {cls.__qualname__} another name")
    found[cls.name] = cls


def combine(*groups: Mapping[str, type[Domain]] | Sequence[type[Domain]], where: str = "domains"
            ) -> dict[str, type[Domain]]:
    """One name -> class table from several sources (built-ins, a subclass's DOMAINS, loaded specs)."""
    table: dict[str, type[Domain]] = {}
    for group in groups:
        classes = group.values() if isinstance(group, Mapping) else group
        for cls in classes:
            _add(table, cls, where)
    return table


@functools.cache
def entry_point_domains() -> dict[str, str]:
    """Domain name -> "module:Class" from installed packages' ``posttrain.tool_domains`` entry points."""
    from importlib.metadata import entry_points

    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def task_domains(task: Mapping[str, Any], available: Mapping[str, type[Domain]]) -> dict[str, type[Domain]]:
    """The classes for the domains ``task`` names: ``available`` plus the task's own ``domain_modules`` plus entry
    points for names still unknown. UserError for a domain nobody provides."""
    where = f"tool_calling task {task.get('id', '?')}"
    table = dict(available)
    specs = task.get("domain_modules")
    if specs is not None:
        if not isinstance(specs, list):
            raise UserError(f"{where}: 'domain_modules' must be a list of module names or .py paths")
        table = combine(table, load_domains(specs, f"{where}: domain_modules"), where=f"{where}: domain_modules")
    states = task.get("domains")
    if not isinstance(states, dict) or not states:
        raise UserError(f"{where}: 'domains' must map domain names ({', '.join(table)}) to initial states")
    for name in sorted(set(states) - set(table)):
        spec = entry_point_domains().get(name)
        if spec is not None:
            table = combine(table, load_domains([spec], f"entry point {ENTRY_POINT_GROUP}:{name}"), where=where)
    unknown = sorted(set(states) - set(table))
    if unknown:
        raise UserError(f"{where}: unknown domains {unknown}; known: {', '.join(table)} (a domain of your own: list "
                        "its module in the task's 'domain_modules' or in the env's 'domains' setting)")
    return {name: table[name] for name in states}
