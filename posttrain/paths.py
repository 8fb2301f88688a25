"""Checks a command makes before it writes an output path: the path is not empty, it is not one of the command's own
inputs, and what is there now is something the command may replace.

Every check raises :class:`UserError` (exit code 2) naming the option and the path, so the user learns it before any
work is done and nothing they gave us is overwritten. Writing itself (locks, all-or-nothing replacement) is in
:mod:`posttrain.atomic`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from posttrain.errors import UserError

EMPTY_PATH = "an empty path would mean the current folder; give a path (write . for the current folder)"


def cli_path(value: str) -> Path:
    """A typer ``parser=`` for path options: ``--out ""`` is a usage error (exit 2), not the current folder.

    (``Path("")`` is ``Path(".")``, so after typer's own conversion the empty value could no longer be told apart.)
    """
    if not value.strip():
        import typer

        raise typer.BadParameter(EMPTY_PATH)
    return Path(value)


def _same(a: Path, b: Path) -> bool:
    """The same file or folder, also through a symlink or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies below it (paths resolved, so ``..`` and symlinks do not hide it)."""
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def check_not_an_input(out: str | Path, inputs: Iterable[str | Path], what: str = "--out") -> None:
    """Refuse to write ``out`` when that would overwrite or delete an input of the same command: ``out`` is an input,
    a folder holding one, or lies inside an input folder."""
    out = Path(out)
    for given in inputs:
        src = Path(given)
        if not src.exists():
            continue
        if out.exists() and _same(out, src):
            raise UserError(f"{what} {out}: is also an input of this command ({src}); writing it would destroy what "
                            "is being read. Choose another output path")
        if _inside(src, out):
            raise UserError(f"{what} {out}: holds an input of this command ({src}); replacing the folder would delete "
                            "it. Choose another output folder")
        if src.is_dir() and _inside(out, src):
            raise UserError(f"{what} {out}: lies inside an input folder of this command ({src}); writing there would "
                            "change the input. Choose a folder outside it")


def check_file_output(out: str | Path, what: str = "--out") -> None:
    """Refuse an output file path that is a folder, or that lies below a file (it could never be created)."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{what} {out}: is a folder; expected the path of a file to write")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what} {out}: {parent} is a file, not a folder")
            break


def check_may_replace(folder: str | Path, kind: str, is_same_kind: Callable[[Path], str | None],
                      what: str = "--out") -> None:
    """Refuse to replace ``folder`` unless it is absent, empty, or holds an earlier output of the same ``kind``.

    ``is_same_kind(folder)`` returns None when the folder is such an output, else what it holds instead (shown to the
    user, e.g. "a model folder (config.json, model.safetensors)").
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise UserError(f"{what} {folder}: exists and is not a folder")
    if not any(folder.iterdir()):
        return
    other = is_same_kind(folder)
    if other is not None:
        raise UserError(f"{what} {folder}: holds {other}, not {kind}; refusing to replace it. Choose an empty or new "
                        f"folder, or remove it yourself if you mean to")


def listing(folder: Path, limit: int = 5) -> str:
    """A few entry names of a folder, for messages."""
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
