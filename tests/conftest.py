"""Shared fixtures: models that many test files need, built or fetched once per session.

- ``tiny_model_dir``: a tiny random Llama model with a real BPE tokenizer and our chat template (built offline, ~2 s).
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
def smollm2_dir() -> Path:
    from posttrain.models.fetch import fetch_model

    return fetch_model("smollm2-135m-instruct")
