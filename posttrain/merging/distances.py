"""How far the merged model moved: L2 distances over all weights, read one tensor at a time (memory ~ one tensor)."""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from safetensors import safe_open

from posttrain.merging.inputs import weight_files


class TensorReader:
    """Read single tensors by name from a (possibly sharded) safetensors checkpoint, keeping each file open once."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        self.files = weight_files(folder, str(folder))
        self._stack = stack
        self._handles: dict[Path, Any] = {}

    def get(self, name: str) -> Any:
        file = self.files[name]
        if file not in self._handles:
            self._handles[file] = self._stack.enter_context(safe_open(file, framework="pt"))
        return self._handles[file].get_tensor(name).float()


def l2_distances(merged: Path, base: Path, inputs: dict[str, Path]) -> dict[str, Any]:
    """``||merged - input||`` for each input (keyed as given), ``||input - base||`` (task vector size) and
    ``||merged - base||``, each over the concatenation of all weights."""
    with ExitStack() as stack:
        out, ref = TensorReader(merged, stack), TensorReader(base, stack)
        readers = {key: TensorReader(path, stack) for key, path in inputs.items()}
        to_input = dict.fromkeys(inputs, 0.0)
        task = dict.fromkeys(inputs, 0.0)
        moved = 0.0
        params = 0
        for name in sorted(out.files):
            m, b = out.get(name), ref.get(name)
            params += m.numel()
            moved += float((m - b).pow(2).sum())
            for key, reader in readers.items():
                x = reader.get(name)
                to_input[key] += float((m - x).pow(2).sum())
                task[key] += float((x - b).pow(2).sum())
    return {
        "parameters": params,
        "tensors": len(out.files),
        "l2_merged_to_input": {k: math.sqrt(v) for k, v in to_input.items()},
        "l2_input_to_base": {k: math.sqrt(v) for k, v in task.items()},
        "l2_merged_to_base": math.sqrt(moved),
    }
