"""Users' own code named in configs and task records: a module by name or a ``.py`` file by path, and one object in it.

    import_plugin("mypkg.rewards")              # a module on the Python path
    import_plugin("rewards/length.py")          # a file (relative to the current folder, or absolute)
    load_object("mypkg.rewards:length_penalty") # "module:name" or "file.py:name" ("module.name" works too)

A file is imported once per process (by its resolved path), under a private module name, so the same file named by
two configs is one module, and a spawned worker or a Ray actor that imports it gets the same objects by name. Every
problem (no such module or file, an import that fails, no such name) is a :class:`UserError` naming ``what`` and the
spec, never a traceback: these strings come from a user's config.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from posttrain.errors import UserError

_FILE_MODULES: dict[str, ModuleType] = {}


def is_file_spec(spec: str) -> bool:
    """A path to a ``.py`` file (or a package folder) rather than a dotted module name."""
    return spec.endswith(".py") or "/" in spec or Path(spec).is_dir()


def _import_error(what: str, spec: str, error: BaseException) -> UserError:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return UserError(f"{what} {spec!r}: importing it failed{where}: {type(error).__name__}: {error}")


def import_plugin(spec: str, what: str = "plugin") -> ModuleType:
    """The module named by ``spec``: a dotted module name or a path to a ``.py`` file or a package folder."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{what}: expected a module name or a path to a .py file, got {spec!r}")
    if not is_file_spec(spec):
        try:
            return importlib.import_module(spec)
        except ModuleNotFoundError as e:
            if e.name and spec.startswith(e.name):  # the module itself, not something it imports
                raise UserError(f"{what} {spec!r}: no module named {e.name!r} on the Python path (give a module "
                                "name or a path to a .py file)") from None
            raise _import_error(what, spec, e) from None
        except Exception as e:  # the module's own code failed
            raise _import_error(what, spec, e) from None
    path = Path(spec)
    target = path / "__init__.py" if path.is_dir() else path
    if not target.is_file():
        raise UserError(f"{what} {spec!r}: file not found (relative to the current folder {Path.cwd()}; expected a "
                        ".py file or a package folder)")
    key = str(target.resolve())
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    name = f"posttrain_plugin_{hashlib.sha1(key.encode()).hexdigest()[:16]}"
    module_spec = importlib.util.spec_from_file_location(
        name, target, submodule_search_locations=[str(path)] if path.is_dir() else None)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"{what} {spec!r}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise _import_error(what, spec, e) from None
    _FILE_MODULES[key] = module
    return module


def split_object_spec(spec: str) -> tuple[str, str | None]:
    """``"mod:name"`` / ``"file.py:name"`` -> (module spec, name); ``"mod.name"`` -> (``"mod"``, ``"name"``) when
    ``mod`` is not a file; a bare file -> (file, None)."""
    if ":" in spec:
        module, _, name = spec.rpartition(":")
        return module, name or None
    if is_file_spec(spec) or "." not in spec:
        return spec, None
    module, _, name = spec.rpartition(".")
    return module, name


def load_object(spec: str, what: str = "plugin") -> Any:
    """The object ``spec`` names: ``"module:name"``, ``"path/file.py:name"`` or ``"module.name"``."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{what}: expected 'module:name' or 'path/file.py:name', got {spec!r}")
    module_spec, name = split_object_spec(spec.strip())
    if name is None:
        raise UserError(f"{what} {spec!r}: name the object too, as 'module:name' or 'path/file.py:name'")
    module = import_plugin(module_spec, what)
    try:
        return getattr(module, name)
    except AttributeError:
        public = sorted(n for n in vars(module) if not n.startswith("_"))[:20]
        raise UserError(f"{what} {spec!r}: {module_spec} has no {name!r} (it defines: {', '.join(public) or 'nothing'})"
                        ) from None


def spec_sha256(spec: str) -> str | None:
    """The sha256 of the file a spec names (for manifests: an edited reward file is a new input), or None for a module
    on the Python path that is not a single file we can find."""
    from posttrain.manifest import file_sha256

    module_spec, _ = split_object_spec(spec)
    if is_file_spec(module_spec):
        path = Path(module_spec)
        target = path / "__init__.py" if path.is_dir() else path
        return file_sha256(target) if target.is_file() else None
    try:
        found = importlib.util.find_spec(module_spec)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None) if found is not None else None
    return file_sha256(Path(origin)) if origin and Path(origin).is_file() else None
