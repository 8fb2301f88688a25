"""Putting a model folder where a later stage reads it, without copying weights when the file system can link them:

    place_model(src, out)           src's model files into out (weights hard-linked, else copied; or moved)
    replace_with_model(src, dst)    dst becomes a copy of src's model files, swapped in whole (never half a model)
    link_folder(link, target)       link -> target, a relative symlink (RUN/rs/model -> round_2/model)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from posttrain.manifest import MANIFEST, METRICS_FILE, STAGE_MARK

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
NOT_MODEL_FILES = (MANIFEST, METRICS_FILE, STAGE_MARK)  # a stage's own records, not part of the model


def place_model(src: Path, out: Path, *, move: bool = False) -> str:
    """Put the model files of ``src`` (its top-level files but the stage's records) into ``out``: moved (``src`` is
    then removed), or weights hard-linked when the file system allows and copied otherwise, and every other file
    copied, so that editing ``out/config.json`` never touches ``src``. Returns how the weights got there."""
    out.mkdir(parents=True, exist_ok=True)
    how = "moved"
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name in NOT_MODEL_FILES:
            continue
        target = out / p.name
        if move:
            os.replace(p, target)
        elif p.suffix in WEIGHT_SUFFIXES:
            try:
                os.link(p, target)
                how = "hard-linked" if how in ("moved", "hard-linked") else how
            except OSError:  # another file system, or links not allowed
                shutil.copy2(p, target)
                how = "copied"
        else:
            shutil.copy2(p, target)
    if move:
        shutil.rmtree(src)
    return how


def replace_with_model(src: Path, dst: Path) -> str:
    """``dst`` becomes a folder of ``src``'s model files, built beside it and swapped in whole (``dst``'s stage mark
    stays: the folder is still that stage's output)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    how = place_model(src, tmp)
    if (dst / STAGE_MARK).is_file():
        shutil.copy2(dst / STAGE_MARK, tmp / STAGE_MARK)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return how


def link_folder(link: Path, target: Path) -> None:
    """``link`` -> ``target`` (relative, so the run folder can move), replaced atomically."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target.resolve(), link.parent.resolve()), target_is_directory=True)
    os.replace(tmp, link)
