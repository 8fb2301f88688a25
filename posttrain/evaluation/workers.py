"""One set of rollout workers for a sequence of models: the next model's weights are loaded into the running engines
when it has the same architecture, tokenizer and tensors as the one they hold; otherwise a new pool is started.

Loading weights takes seconds where starting vLLM takes ~20 s per worker, so an eval of SFT, Chat, Logic and merged
models (all fine-tuned from one base) starts its workers once. A weight update only replaces the tensors a checkpoint
holds and keeps the engine's tokenizer, generation settings and config, so "compatible" is strict: the same model
config (up to bookkeeping keys and the stored dtype, which the engine casts), the same end-of-sequence ids, the same
tokenizer files, and exactly the same tensor names and shapes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posttrain.calibration.elicit import CONFIG_KEY
from posttrain.manifest import file_sha256
from posttrain.rollout.config import RolloutConfig

if TYPE_CHECKING:
    from posttrain.rollout.pool import RolloutPool

# config.json keys that do not change what the engine computes once weights are in place (CONFIG_KEY: how
# `posttrain calibrate` reads confidences, saved with a calibrated model)
BOOKKEEPING_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", CONFIG_KEY)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")
GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _tensor_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from the safetensors headers (no weights are read)."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    from posttrain.rollout.engines import weight_files

    for file in weight_files(model_dir):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[name] = list(f.get_slice(name).get_shape())
    return shapes


def architecture_key(model_dir: str | Path) -> str:
    """Equal keys: one model's weights can replace the other's in a running engine with nothing else changing."""
    folder = Path(model_dir)
    config = {k: v for k, v in _read_json(folder / "config.json").items() if k not in BOOKKEEPING_KEYS}
    generation = _read_json(folder / "generation_config.json")
    parts = {
        "config": config,
        "generation": {k: generation.get(k) for k in GENERATION_KEYS},
        "tokenizer": {name: file_sha256(folder / name) for name in TOKENIZER_FILES if (folder / name).is_file()},
        "tensors": _tensor_shapes(folder),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ModelWorkers:
    """Hands out a pool holding a given model's weights, reusing the running pool whenever it can.

    ``pool``: running workers owned by the caller (used while models are compatible with what they hold, never shut
    down here). ``starts`` counts pools started here, ``weight_updates`` models loaded into a running pool.
    """

    def __init__(self, config: RolloutConfig, pool: RolloutPool | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = log or (lambda _msg: None)
        self.pool = pool
        self.owned = False
        self.key = architecture_key(pool.model_path) if pool is not None else None
        self.loaded: Path | None = None  # unknown for a caller's pool: the first model is always loaded into it
        self.starts = 0
        self.weight_updates = 0

    def load(self, name: str, model_dir: Path) -> tuple[RolloutPool, str]:
        """A pool that holds ``model_dir``'s weights, and how it got them: "loaded" (already there), "weights"
        (an in-place update) or "started" (a new pool)."""
        key = architecture_key(model_dir)
        if self.pool is not None and key == self.key:
            if self.loaded == model_dir.resolve():
                return self.pool, "loaded"
            self.say(f"{name}: loading its weights into the running rollout workers")
            self.pool.update_weights_from_path(model_dir)
            self.loaded = model_dir.resolve()
            self.weight_updates += 1
            return self.pool, "weights"
        if self.pool is not None:
            self.say(f"{name}: a different architecture or tokenizer than the running workers; starting new workers")
        self._release()
        self.say(f"{name}: starting {self.config.num_workers} {self.config.engine} rollout worker(s)")
        from posttrain.rollout.pool import RolloutPool

        self.pool, self.owned, self.key = RolloutPool.from_config(model_dir, self.config), True, key
        self.loaded = model_dir.resolve()
        self.starts += 1
        return self.pool, "started"

    def _release(self) -> None:
        if self.pool is not None and self.owned:
            self.pool.shutdown()
        self.pool, self.owned, self.key, self.loaded = None, False, None, None

    def close(self) -> None:
        self._release()


def load_order(models: dict[str, Path], first: Path | None = None) -> list[str]:
    """Model names ordered so that compatible models follow each other (each architecture starts workers once); the
    group of ``first`` (the running pool's model) goes first, otherwise groups keep the order they appear in."""
    keys = {name: architecture_key(path) for name, path in models.items()}
    groups = list(dict.fromkeys(keys.values()))
    if first is not None:
        running = architecture_key(first)
        groups.sort(key=lambda k: k != running)  # stable: the other groups keep their order
    return [name for group in groups for name in models if keys[name] == group]
