"""The shared output helpers: a lock per output, folders and files replaced all at once, partial files marked."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import posttrain.atomic as atomic
from posttrain.atomic import output_lock, partial_path, staged_file, staged_folder
from posttrain.errors import UserError
from posttrain.paths import check_may_replace, check_not_an_input

HOLD_LOCK = """
import sys, time
from posttrain.atomic import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_the_lock_excludes_a_second_writer_and_dies_with_its_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=r"out: another process is writing it right now .*\.out\.lock"):
            with output_lock(out):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, and the kernel still drops the lock
        holder.wait()
    with output_lock(out):
        pass


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_staged_folder_replaces_the_old_one_only_when_finished(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as staging:
            (staging / "new.txt").write_text("half")
            raise RuntimeError("killed half-way")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with staged_folder(out) as staging:
        (staging / "new.txt").write_text("new")
        assert [p.name for p in out.iterdir()] == ["old.txt"]  # readers see the old folder until the end
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or old folder left behind


def test_a_staged_folder_through_a_symlink_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with staged_folder(tmp_path / "link") as staging:
        (staging / "x").write_text("1")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "x").read_text() == "1"


def test_a_staged_file_is_renamed_at_the_end_or_kept_as_partial(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("earlier results\n")
    with pytest.raises(KeyboardInterrupt):
        with staged_file(out, keep_partial=True) as f:
            f.write("row 1\n")
            raise KeyboardInterrupt
    assert out.read_text() == "earlier results\n" and partial_path(out).read_text() == "row 1\n"
    with pytest.raises(ValueError):
        with staged_file(out) as f:
            f.write("row 1\n")
            raise ValueError
    with staged_file(out) as f:
        f.write("all rows\n")
    assert out.read_text() == "all rows\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "r.jsonl.partial"]


def test_two_threads_writing_one_file_each_leave_a_whole_file(tmp_path):
    out = tmp_path / "tasks.jsonl"

    def write(tag: str) -> None:
        with staged_file(out) as f:
            for i in range(2000):
                f.write(f"{tag} {i}\n")

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.read_text().splitlines()
    assert len(lines) == 2000 and len({line.split()[0] for line in lines}) == 1


def test_input_and_replace_checks(tmp_path):
    src = tmp_path / "data" / "rows.jsonl"
    src.parent.mkdir()
    src.write_text("{}\n")
    (tmp_path / "alias.jsonl").hardlink_to(src)
    for out, says in [(src, "is also an input"), (tmp_path / "alias.jsonl", "is also an input"),
                      (tmp_path / "data", "holds an input"), (tmp_path / "data" / ".." / "data", "holds an input")]:
        with pytest.raises(UserError, match=says):
            check_not_an_input(out, [src])
    check_not_an_input(tmp_path / "out", [src])
    with pytest.raises(UserError, match="holds a model folder, not a tiny model"):
        check_may_replace(tmp_path / "data", "a tiny model", lambda folder: "a model folder")
    check_may_replace(tmp_path / "data", "a tiny model", lambda folder: None)
    check_may_replace(tmp_path / "absent", "a tiny model", lambda folder: "never asked")


def test_outputs_get_the_umask_mode_not_private_temp_modes(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with staged_folder(tmp_path / "out") as staging:
            (staging / "data").write_text("x")
        with staged_file(tmp_path / "r.jsonl") as f:
            f.write("x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # tempfile's 0700 would lock out other readers
    assert stat.S_IMODE((tmp_path / "r.jsonl").stat().st_mode) == 0o644  # ... and its 0600 files
