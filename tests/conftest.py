"""Shared fixtures: models that many test files need, built or fetched once per session.

- ``tiny_model_dir``: a tiny random Llama model with a real BPE tokenizer and our chat template (built offline, ~2 s).
- ``tiny_family(name)``: the same with another family's tokens and template (``qwen3``, ``llama3``, ``plain``).
- ``smollm2_dir``: the real SmolLM2-135M-Instruct in bf16, fetched once into the user cache (``~/.cache/posttrain`` or
  ``$POSTTRAIN_CACHE``) and reused by later sessions.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posttrain.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory):
    """``tiny_family(name)`` -> a tiny model of that family (``qwen3``, ``llama3``, ``plain``; see
    posttrain.models.tiny), built once per session."""
    from posttrain.models.tiny import make_tiny_model

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny_model(tmp_path_factory.mktemp("families") / family, seed=0, family=family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from posttrain.models.fetch import fetch_model

    return fetch_model("smollm2-135m-instruct")


def write_built_dataset(folder: Path, kind: str, rows: list[dict]) -> Path:
    """A dataset folder in the `posttrain data build` contract format (data.parquet + manifest.json) from plain rows.

    ``rows`` carry the kind's columns (chat: messages, tools; text: text; task: env, messages, tools, task); ``id``,
    ``bucket`` and ``source`` are filled in when missing.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from posttrain.manifest import file_sha256, write_manifest

    columns = {"chat": ["messages", "tools"], "text": ["text"], "task": ["env", "messages", "tools", "task"]}[kind]
    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([(c, pa.string()) for c in ("id", "bucket", "source")]
                       + [(c, messages if c == "messages" else pa.string()) for c in columns])
    full = [{"id": f"row{i}", "bucket": "test", "source": "tests", **row} for i, row in enumerate(rows)]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), folder / "data.parquet")
    data_sha = file_sha256(folder / "data.parquet")
    write_manifest(folder, {"stage": "data", "kind": kind, "columns": ["id", "bucket", "source", *columns],
                            "config": {}, "inputs": {}, "outputs": {"data.parquet": data_sha},
                            "metrics": {"rows": len(full)}})
    return folder


@pytest.fixture(scope="session")
def built_dataset_writer():
    """The `write_built_dataset(folder, kind, rows)` helper as a fixture, for test files that prefer fixtures."""
    return write_built_dataset


@pytest.fixture(scope="module", autouse=True)
def _ray_down_after_module():
    """Each test module starts from no Ray instance: a module that leaves one running (with whatever CPUs its actors
    still hold) must not change how the next module's workers are scheduled."""
    yield
    import sys

    ray = sys.modules.get("ray")  # only if some test imported it: importing Ray costs seconds
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def lay_out_hub_cache(hf_home: Path, repo_id: str, model_dir: Path, commit: str | None = None,
                      ref: str = "main") -> str:
    """Put ``model_dir``'s files into a real Hugging Face hub cache under ``hf_home`` (what ``hf download`` leaves:
    ``hub/models--ORG--NAME/blobs/<sha>`` files, ``snapshots/<commit>/<name>`` symlinks to them, ``refs/<ref>``
    holding the commit) and return the commit. No hub is reachable here; with ``HF_HUB_OFFLINE=1`` huggingface_hub
    resolves the id from this cache exactly as it would after a download."""
    import hashlib
    import os
    import shutil

    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}:{ref}:{model_dir}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != "manifest.json"):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snapshot / f.name
        if not link.exists():
            link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


TOOL_CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 1 and 2."},
                     {"role": "assistant", "content": "3"}, {"role": "user", "content": "Thanks."}]
ADD_TOOL = {"type": "function", "function": {"name": "add", "description": "Add.",
                                             "parameters": {"type": "object", "properties": {}}}}


def render_tool_conversation(tokenizer, template: str | None = None) -> str:
    """How a tokenizer (transformers' or vLLM's; a folder or Hub id is loaded with transformers) renders a short
    conversation with one tool, with ``template`` replacing its own when given: comparing two renderings shows
    whether a saved folder kept its input model's template."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer.apply_chat_template(TOOL_CONVERSATION, tools=[ADD_TOOL], tokenize=False,
                                         add_generation_prompt=True)


@pytest.fixture(scope="session")
def hub_cache_writer():
    """The `lay_out_hub_cache(hf_home, repo_id, model_dir)` helper as a fixture."""
    return lay_out_hub_cache
