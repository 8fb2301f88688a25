"""Weights on the wire: many named tensors packed into one flat byte buffer.

Ray's object store takes a numpy array with one memory copy and hands it to every worker without another one (the
worker reads it straight from shared memory). A dict of torch tensors is instead pickled tensor by tensor and
unpickled into fresh copies in every worker: for SmolLM2-135M in bf16 that was 1-3 s per push against a few tenths
of a second packed (``python bench/weight_push.py``). The trainer packs into a buffer it keeps between pushes (a
fresh 270 MB allocation page-faults on every push), converting to the workers' dtype in the same copy.

The tensors a worker gets from :meth:`PackedTensors.items` are views of the shared object: engines only read them
(they copy each one into their own parameters), and writing to one would change what every other worker loads.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

ALIGN = 64  # bytes; every tensor starts on a boundary any dtype can be viewed from


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # torch dtype name, e.g. "bfloat16"
    shape: tuple[int, ...]
    offset: int  # bytes into the buffer

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * getattr(torch, self.dtype).itemsize


@dataclass
class PackedTensors:
    """Named tensors in one contiguous ``uint8`` numpy buffer (what travels through Ray's object store)."""

    buffer: np.ndarray
    specs: list[TensorSpec]

    def items(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) views into the buffer, in packing order."""
        with warnings.catch_warnings():  # a worker's copy is read-only shared memory; the views are only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            raw = torch.from_numpy(self.buffer)
        return [(s.name, raw[s.offset:s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape))
                for s in self.specs]


class TensorPacker:
    """Packs named tensors into one buffer that is kept and reused while it is big enough.

    A :class:`PackedTensors` returned by :meth:`pack` is a view of that buffer: it is valid until the next ``pack``
    (put it in the object store, which copies it, before packing again).
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def pack(self, named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None) -> PackedTensors:
        """Pack ``named`` (CPU or device tensors), cast to ``dtype`` if given (floating-point tensors only)."""
        named = list(named)
        specs, offset = [], 0
        for name, tensor in named:
            target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            spec = TensorSpec(name, str(target).removeprefix("torch."), tuple(tensor.shape), offset)
            specs.append(spec)
            offset += -(-spec.nbytes // ALIGN) * ALIGN
        if self._buffer is None or self._buffer.numel() < offset:
            self._buffer = torch.empty(offset, dtype=torch.uint8)
        buffer = self._buffer[:offset]
        packed = PackedTensors(buffer.numpy(), specs)
        with torch.no_grad():
            for (_, tensor), (_, view) in zip(named, packed.items(), strict=True):
                view.copy_(tensor.detach())  # one pass: device -> host and the dtype cast together
        return packed


def pack_tensors(named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None) -> PackedTensors:
    """Pack into a fresh buffer (for one-off pushes; a trainer pushing every step keeps a :class:`TensorPacker`)."""
    return TensorPacker().pack(named, dtype)
