"""The output folder of `data build`: checked against its manifest when read, replaced all at once, one writer at a
time, and never written over something that is not an earlier build (or over the build's own inputs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from posttrain.data import build_dataset, load_built
from posttrain.errors import UserError

POSTTRAIN = Path(sys.executable).parent / "posttrain"


def _recipe(tmp_path: Path, n: int = 40, source: str = "rows.jsonl") -> Path:
    path = tmp_path / source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": f"row number {i} says something about {i % 7}"}) + "\n"
                            for i in range(n)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "text", "buckets": {"b": {"sources": [{"path": source}]}}}))
    return recipe


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_load_built_checks_the_data_against_its_manifest(tmp_path):
    recipe = _recipe(tmp_path)
    build_dataset(recipe, tmp_path / "a")
    build_dataset(recipe, tmp_path / "b", seed=1)  # same rows and count, another order
    shutil.copy(tmp_path / "b" / "data.parquet", tmp_path / "a" / "data.parquet")
    with pytest.raises(UserError, match="sha256 is not the one manifest.json records"):
        load_built(tmp_path / "a")  # the row count alone matched: this was accepted
    (tmp_path / "b" / "data.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(UserError, match="sha256 is not the one"):
        load_built(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    del manifest["outputs"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="records no sha256 of data.parquet"):
        load_built(tmp_path / "b")


KILLED_BUILD = """
import os, signal, sys
import posttrain.manifest as m
m.write_json = lambda path, data: os.kill(os.getpid(), signal.SIGKILL)  # killed right before the manifest lands
from posttrain.data import build_dataset
build_dataset(sys.argv[1], sys.argv[2], seed=1)
"""


def test_a_build_killed_before_its_manifest_leaves_the_old_folder_whole(tmp_path):
    recipe = _recipe(tmp_path)
    out = tmp_path / "out"
    build_dataset(recipe, out)
    before = _snapshot(out)
    done = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(recipe), str(out)], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert _snapshot(out) == before  # not new data under the old manifest
    assert len(load_built(out)) == 40
    m = build_dataset(recipe, out, seed=1)  # the next build cleans up what the killed one left
    assert m["seed"] == 1 and len(load_built(out)) == 40
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == [".out.lock"]


def test_a_second_writer_gets_a_clear_error_not_a_crash(tmp_path):
    from posttrain.atomic import output_lock

    recipe = _recipe(tmp_path)
    out = tmp_path / "out"
    with output_lock(out):  # another process (here: this one) is writing the folder
        done = subprocess.run([str(POSTTRAIN), "data", "build", str(recipe), "--out", str(out)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "another process is writing it" in " ".join(done.stderr.split())
    assert not out.exists()


def test_concurrent_builds_into_one_folder_never_crash_or_mix(tmp_path):
    recipe = _recipe(tmp_path, n=20_000)
    out = tmp_path / "out"
    procs = [subprocess.Popen([str(POSTTRAIN), "data", "build", str(recipe), "--out", str(out), "--seed", str(i),
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert "Traceback" not in err and (rc == 0 or (rc == 2 and "another process is writing it" in
                                                         " ".join(err.split()))), err
    assert any(rc == 0 for rc, _ in results)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(load_built(out)) == 20_000 and manifest["seed"] in (0, 1, 2)


def test_out_is_never_something_else_or_an_input(tmp_path):
    recipe = _recipe(tmp_path, source="src/rows.jsonl")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(UserError, match=r"holds files that are not a data build output \(config.json, model"):
        build_dataset(recipe, model)
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
    for out, says in [(tmp_path / "src", "holds an input of this command"),
                      (tmp_path, "holds an input of this command"),
                      (tmp_path / "src" / "rows.jsonl", "exists and is not a folder")]:
        with pytest.raises(UserError, match=says):
            build_dataset(recipe, out)
    assert (tmp_path / "src" / "rows.jsonl").stat().st_size > 0
    datasets.Dataset.from_list([{"text": f"saved row {i} of text"} for i in range(4)]).save_to_disk(
        str(tmp_path / "saved"))
    saved = tmp_path / "saved.yaml"
    saved.write_text(yaml.safe_dump({"kind": "text", "buckets": {"b": {"sources": [{"path": "saved"}]}}}))
    with pytest.raises(UserError, match="lies inside an input folder"):
        build_dataset(saved, tmp_path / "saved" / "out")
    build_dataset(recipe, tmp_path / "out")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"a data build plus other files \(notes.txt\)"):
        build_dataset(recipe, tmp_path / "out")
    (tmp_path / "out" / "notes.txt").unlink()
    (tmp_path / "empty").mkdir()
    for ok in (tmp_path / "out", tmp_path / "empty"):  # an earlier build or an empty folder is replaced
        assert build_dataset(recipe, ok)["metrics"]["rows"] == 40


def test_the_same_inputs_still_give_the_same_bytes_through_the_staged_writer(tmp_path):
    recipe = _recipe(tmp_path)
    build_dataset(recipe, tmp_path / "one")
    build_dataset(recipe, tmp_path / "two")
    build_dataset(recipe, tmp_path / "two")  # replacing an earlier build
    assert _snapshot(tmp_path / "one") == _snapshot(tmp_path / "two")
    assert sorted(os.listdir(tmp_path / "two")) == ["data.parquet", "manifest.json"]
