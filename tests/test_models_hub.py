"""Hub ids as model keys: a real Hugging Face cache laid out on disk, resolved offline through huggingface_hub.

No hub is reachable here, so every test runs with ``HF_HUB_OFFLINE=1`` against a cache folder in the layout
``hf download`` leaves (blobs, snapshot symlinks, refs); the code path is the one an online user's cached models take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.errors import UserError
from posttrain.manifest import read_manifest, write_manifest
from posttrain.models.hub import looks_like_hub_id, snapshot_origin, split_spec
from posttrain.models.loading import resolve_model

REPO = "tiny-org/tiny-chat"


@pytest.fixture
def hub(tmp_path: Path, tiny_model_dir: Path, hub_cache_writer, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "hf"
    main = hub_cache_writer(home, REPO, tiny_model_dir)
    tagged = hub_cache_writer(home, REPO, tiny_model_dir, commit="a" * 40, ref="v1.0")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home, main, tagged


def test_hub_ids_and_paths_are_told_apart() -> None:
    assert looks_like_hub_id("Qwen/Qwen3-0.6B") and looks_like_hub_id("a/b@v1.0")
    for path in ("./runs/sft", "/abs/model", "~/m", "a/b/c", "../x", "a/b@", "nowhere"):
        assert not looks_like_hub_id(path), path
    assert split_spec("org/name@abc") == ("org/name", "abc") and split_spec("org/name") == ("org/name", None)


def test_a_cached_hub_id_resolves_offline_to_its_snapshot(hub, tiny_model_dir: Path) -> None:
    home, main, tagged = hub
    path = resolve_model(REPO)
    assert path == home / "hub" / "models--tiny-org--tiny-chat" / "snapshots" / main
    assert (path / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()
    assert snapshot_origin(path) == (REPO, main)
    assert resolve_model(f"{REPO}@v1.0").name == tagged  # a tag
    assert resolve_model(f"{REPO}@{main}").name == main  # a commit


def test_manifests_record_the_commit_a_hub_id_stood_for(hub, tmp_path: Path) -> None:
    _, main, tagged = hub
    path = resolve_model(f"{REPO}@v1.0")
    write_manifest(tmp_path / "out", {"stage": "x", "config": {"model": f"{REPO}@v1.0"}, "inputs": {str(path): "h"}})
    record = read_manifest(tmp_path / "out")["hub_models"]
    assert record[f"{REPO}@v1.0"] == {"repo_id": REPO, "revision": "v1.0", "commit": tagged, "path": str(path)}
    assert record[str(path)] == {"repo_id": REPO, "commit": tagged}
    write_manifest(tmp_path / "plain", {"stage": "x", "config": {"model": "/some/folder"}, "inputs": {}})
    assert "hub_models" not in read_manifest(tmp_path / "plain")


def test_offline_and_not_cached_says_what_to_do(hub) -> None:
    with pytest.raises(UserError) as e:
        resolve_model("nobody/not-here", key="cfg.yaml: model")
    message = str(e.value)
    assert message.startswith("cfg.yaml: model: 'nobody/not-here'") and "HF_HUB_OFFLINE" in message
    assert "hf download nobody/not-here" in message
    with pytest.raises(UserError, match=r"tiny-org/tiny-chat@v9.*not in the local Hugging Face cache"):
        resolve_model(f"{REPO}@v9")


def test_model_folders_without_tokenizer_or_weights_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_model_dir, no_tok)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_tok / name).unlink(missing_ok=True)
    with pytest.raises(UserError, match=r"^sft.yaml: model: .*no_tok has no tokenizer"):
        resolve_model(no_tok, key="sft.yaml: model")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no weights"):
        resolve_model(no_weights)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="holds a LoRA adapter"):
        resolve_model(adapter)


def test_cli_offline_hub_miss_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(json.dumps({"model": "nobody/not-here", "data": str(tmp_path / "data"),
                                  "output_dir": str(tmp_path / "out")}))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "sft", "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "nobody/not-here" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr


def test_merge_inputs_may_be_hub_ids(hub) -> None:
    from posttrain.merging.inputs import inspect_input

    _, main, _ = hub
    item = inspect_input(REPO, "models.0.path")
    assert item.kind == "full" and item.path.name == main
