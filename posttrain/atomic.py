"""All-or-nothing outputs: one writer per output path, and a reader sees the old output or the new one, never a mix.

* :func:`output_lock` takes an exclusive ``fcntl`` lock on a hidden ``.NAME.lock`` file next to the output, so a
  second writer gets a clear error instead of interleaving its files with the first one's. The kernel drops the lock
  when its process dies (even by SIGKILL), so a killed run never leaves a stale lock behind; the empty lock file stays
  (removing it would let two writers lock two different files).
* :func:`staged_folder` yields a fresh hidden folder next to the output; when the block ends without an error, the
  finished folder takes the output's place in one rename (``renameat2(RENAME_EXCHANGE)`` where the file system has
  it, else two renames with a moment in which the folder is absent) and the old contents are removed.
* :func:`staged_file` does the same for one file: written under a unique temporary name, renamed over the target at
  the end. On an error the partial file is removed, or kept under ``NAME.partial`` and reported when asked to.

Leftovers of a killed writer (``.NAME.staging-*``, ``.NAME.old-*``) are removed by the next writer, under the lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from posttrain.errors import UserError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | Path, what: str = "--out") -> Iterator[None]:
    """Hold the writer's lock of ``path`` (a file or folder, which need not exist yet) for the block."""
    path = Path(path)
    lock = lock_path(path.resolve())  # an output reached through a symlink has one lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{what} {path}: another process is writing it right now (it holds the lock {lock}); "
                            "wait until it has finished, or write somewhere else") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _fsync_tree(folder: Path) -> None:
    """Flush every file and the folder itself, so a power loss after the rename cannot leave empty files behind."""
    for p in [*folder.rglob("*"), folder]:
        if p.is_symlink():
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _unique(path: Path, kind: str) -> Path:
    """A new sibling name of ``path`` (``.NAME.<kind>-<random>``); created by the caller with the umask's mode, unlike
    ``tempfile``'s private 0700/0600, so outputs stay readable to whoever could read them before."""
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}"


def _remove_leftovers(path: Path) -> None:
    """Staging and old folders a killed writer left next to ``path`` (callers hold the lock, so none is live)."""
    for pattern in (f".{path.name}.staging-*", f".{path.name}.old-*"):
        for p in path.parent.glob(pattern):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty folder to write a new version of ``folder`` into; it replaces ``folder`` when the block ends
    without an error (and is removed when it raises). Callers hold :func:`output_lock` of ``folder``."""
    folder = Path(folder).resolve()  # through a symlink, replace the folder it points to (and keep the link)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    staging = _unique(folder, "staging")
    os.mkdir(staging)
    try:
        yield staging
        _fsync_tree(staging)
        if not folder.exists():
            os.rename(staging, folder)
        elif _exchange(staging, folder):
            shutil.rmtree(staging)  # it now holds the old contents
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.rename(folder, old / "x")
            try:
                os.rename(staging, folder)
            except OSError:
                os.rename(old / "x", folder)  # put the old output back rather than leave none
                raise
            shutil.rmtree(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged_file(path: str | Path, keep_partial: bool = False, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary text file next to ``path``; it becomes ``path`` when the block ends without an error.

    On an error (or Ctrl-C) the partial file is removed, or with ``keep_partial`` kept as ``NAME.partial`` when it has
    anything in it (an earlier ``path`` is left as it was either way).
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    done = False
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            if keep_partial and os.path.getsize(tmp) > 0:
                os.replace(tmp, partial_path(path))
            else:
                tmp.unlink(missing_ok=True)


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")
