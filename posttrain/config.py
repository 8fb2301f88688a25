"""Typed configs: pydantic schemas, YAML loading and dotted ``key=value`` overrides.

Every stage config is a pydantic model with ``extra="forbid"`` so that a misspelt key is an error, not a silent default.
Errors name the file, the dotted key path and what was expected, and are raised as :class:`UserError` (exit code 2).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from posttrain.errors import UserError
from posttrain.paths import EMPTY_PATH

T = TypeVar("T", bound=BaseModel)
PLAIN_ERRORS = {"renamed", "unknown_section", "section"}  # our own error types: their message says it all


def _empty_path(annotation: Any, value: Any) -> str | None:
    """Where ``value`` puts an empty string in place of a Path: "" for the value itself, ".key" or ".0" for an item of
    a dict or list; None when it does not."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _empty_path(args[0], value)
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "" if isinstance(value, str) and not value.strip() else None
    if origin in (Union, types.UnionType):
        if str in args:  # a plain string may be empty
            return None
        return next((w for a in args if (w := _empty_path(a, value)) is not None), None)
    items: list[tuple[Any, Any]] = []
    if origin in (list, tuple, set, frozenset) and isinstance(value, list | tuple) and args:
        items = list(enumerate(value))
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        items = list(value.items())
    item_type = args[1] if origin is dict else args[0] if args else None
    for key, item in items:
        inner = _empty_path(item_type, item)
        if inner is not None:
            return f".{key}{inner}"
    return None


class Schema(BaseModel):
    """Base for every config section: unknown keys are rejected, a key that was renamed says its new name, and an
    empty path is refused (pydantic turns ``""`` into ``Path(".")``, so ``output_dir=`` would silently mean the
    current folder)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    renamed: ClassVar[dict[str, str]] = {}  # old key -> new key

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls.renamed.items():
                if old in data:
                    raise PydanticCustomError("renamed", f"{old}: this key is now called {new}; write {new}: "
                                                         f"{data[old]!r} instead")
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_paths(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        where = _empty_path(field.annotation, value) if field is not None else None
        if where:
            raise ValueError(f"{info.field_name}{where}: {EMPTY_PATH}")
        if where is not None:
            raise ValueError(EMPTY_PATH)
        return value


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` keeps the last of two equal keys and drops the first without a word (a recipe loses a bucket,
    a config a whole section); this loader refuses them. Merge keys (``<<: *anchor``) are overridden by design."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _where(path: Path) -> str:
    """A path as given, plus what a relative one was resolved against."""
    return str(path) if path.is_absolute() else f"{path} (relative to the current folder: {path.resolve()})"


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning missing files, non-UTF-8 bytes, duplicate keys and syntax errors into UserError
    naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{_where(path)}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path} (line {line}): not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
                        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        raise UserError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value), the value parsed as YAML (so 3 is an int, [1,2] a list)."""
    if "=" not in item:
        raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-5")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override {item!r}: expected a dotted key such as train.learning_rate")
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        raise UserError(f"override {item!r}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in a nested dict (creating sections as needed)."""
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path):
            dotted = ".".join(path[: i + 1])
            last = i == len(path) - 1
            if isinstance(node, list):  # `models.1.weight=2` addresses an item of a list
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"override {item!r}: {dotted}: expected an index below {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                parent = ".".join(path[:i])
                raise UserError(f"override {item!r}: {parent} is a {type(node).__name__}, not a section")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def _describe(err: dict[str, Any]) -> str:
    """Turn one pydantic error into 'expected ..., got ...'."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in PLAIN_ERRORS:
        return err["msg"]
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    return f"{err['msg'][0].lower()}{err['msg'][1:]} (got {shown})"


def format_validation_error(source: str, exc: ValidationError, schema: type[BaseModel] | None = None) -> str:
    """One line per problem: ``source: key.path: what was expected``; unknown keys list the allowed ones."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = _describe(err)
        if err["type"] == "extra_forbidden" and schema is not None:
            allowed = _allowed_keys(schema, [str(p) for p in err["loc"][:-1]])
            if allowed:
                msg += f"; expected one of: {', '.join(sorted(allowed))}"
        if err["type"] in PLAIN_ERRORS and not err["loc"]:  # the message names its key itself
            lines.append(f"{source}: {msg}")
            continue
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(schema: type[BaseModel], path: list[str]) -> list[str]:
    """Field names of the (nested) model at ``path``, following pydantic field annotations where it can."""
    model: Any = schema
    for part in path:
        if part.isdigit():  # an item of a list of models: the item's model was already resolved
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = _model_of(fields[part].annotation)
        if model is None:
            return []
    fields = getattr(model, "model_fields", None)
    return list(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def validate(schema: type[T], data: Any, source: str) -> T:
    """Validate plain data against a schema, raising UserError with one line per problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(source, e, schema)) from None


def load_config(schema: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Load ``path`` (optional), apply ``key=value`` overrides, validate against ``schema``."""
    data: Any = read_yaml(path) if path is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides or []))
    source = str(path) if path is not None else "config"
    if overrides:
        source += " (with overrides)"
    return validate(schema, data, source)


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (what --dry-run prints and what manifests store)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
