"""Packing named tensors into one buffer for the trip through Ray's object store (posttrain.rollout.packing)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import torch

from posttrain.rollout.engines import named_items
from posttrain.rollout.packing import ALIGN, TensorPacker, pack_tensors


def _named() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [("w", torch.randn(5, 7, generator=g)),
            ("w_t", torch.randn(7, 3, generator=g).t()),  # not contiguous
            ("half", torch.randn(3, generator=g).to(torch.bfloat16)),
            ("scalar", torch.tensor(2.5)),
            ("empty", torch.zeros(0, 4)),
            ("ids", torch.arange(9, dtype=torch.int64).view(3, 3)),
            ("mask", torch.tensor([True, False, True]))]


def test_round_trip_keeps_names_order_shapes_dtypes_and_values() -> None:
    named = _named()
    packed = pack_tensors(named)
    out = packed.items()
    assert [n for n, _ in out] == [n for n, _ in named]
    for (_, a), (_, b) in zip(named, out, strict=True):
        assert b.dtype == a.dtype and b.shape == a.shape and torch.equal(a, b)
    assert all(s.offset % ALIGN == 0 for s in packed.specs)
    assert packed.buffer.dtype == np.uint8 and packed.buffer.ndim == 1
    # the engines accept it wherever they accept named tensors
    assert all(a == b and torch.equal(x, y) for (a, x), (b, y) in zip(named_items(packed), out, strict=True))


def test_cast_applies_to_floating_point_tensors_only() -> None:
    named = _named()
    out = dict(pack_tensors(named, dtype=torch.bfloat16).items())
    for name, tensor in named:
        if tensor.is_floating_point():
            assert out[name].dtype == torch.bfloat16 and torch.equal(out[name], tensor.to(torch.bfloat16))
        else:
            assert out[name].dtype == tensor.dtype and torch.equal(out[name], tensor)


def test_packer_reuses_its_buffer_and_grows_when_needed() -> None:
    packer = TensorPacker()
    first = packer.pack([("a", torch.ones(100))])
    address = first.buffer.ctypes.data
    second = packer.pack([("a", torch.full((100,), 3.0))])
    assert second.buffer.ctypes.data == address  # no new allocation for a same-size push
    assert torch.equal(dict(second.items())["a"], torch.full((100,), 3.0))
    bigger = packer.pack([("a", torch.ones(100)), ("b", torch.arange(1000.0))])
    assert torch.equal(dict(bigger.items())["b"], torch.arange(1000.0))


def test_pickles_as_one_out_of_band_buffer() -> None:
    """How Ray serializes it (pickle protocol 5): the tensor bytes leave as one buffer, not inside the pickle."""
    named = _named()
    packed = pack_tensors(named)
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(packed, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(head) < 2000
    back = pickle.loads(head, buffers=buffers)
    for (_, a), (_, b) in zip(named, back.items(), strict=True):
        assert torch.equal(a, b)


def test_a_read_only_buffer_gives_views_without_a_warning() -> None:
    packed = pack_tensors(_named())
    packed.buffer.flags.writeable = False  # what a Ray worker gets from shared memory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        items = dict(packed.items())
    assert torch.equal(items["ids"], torch.arange(9).view(3, 3))
