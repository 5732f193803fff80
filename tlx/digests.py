"""Digests of saved arrays: two position-weighted uint32 sums over each array's bits.

Each process sums over the shards it holds (replica 0 only) and the partial sums are added over
processes; sums modulo 2**32 are exact in any order, so an array has one digest under any mesh
and any process count, and a checkpoint saved under one layout verifies under another. Any
single flipped bit changes the first sum (it multiplies an odd weight); the second mixes the
bits so that swapped or shifted elements change it too. A checksum, not a cryptographic hash.
"""

import jax
import numpy as np

from tlx.errors import CheckpointError
from tlx.optim import path_str


class DamagedCheckpoint(CheckpointError):
    """A step that cannot be read back as it was written; the message says what is wrong."""


def flatten(tree) -> dict:
    return {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


_GOLDEN, _MIX1, _MIX2 = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D)


def _words(x: np.ndarray) -> np.ndarray:
    """An array's bit pattern as uint32 words, one per element (8-byte types: two, last axis)."""
    x = np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    size = x.dtype.itemsize
    if size == 8:
        return x.reshape(*x.shape, 1).view(np.uint32)
    return x.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[size]).astype(np.uint32, copy=False)


def _block_digest(block: np.ndarray, shape: tuple, index: tuple) -> np.ndarray:
    """Two position-weighted uint32 sums over one block of a global array of `shape`: sums are
    exact modulo 2**32 in any order, so the blocks of any sharding add up to the same digest.
    Any single flipped bit changes the first sum (it multiplies an odd weight)."""
    words = _words(block)
    if words.ndim > len(shape):  # 8-byte elements: the global shape gains a trailing 2
        shape, index = (*shape, 2), (*index, slice(0, 2))
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1] if shape else ()
    linear = np.zeros((1,) * words.ndim, np.uint32)
    for axis, (sl, n, stride) in enumerate(zip(index, words.shape, strides, strict=True)):
        start = sl.start or 0
        pos = (np.arange(start, start + n, dtype=np.uint64) * int(stride)) % (1 << 32)
        linear = linear + pos.astype(np.uint32).reshape(
            [-1 if a == axis else 1 for a in range(words.ndim)]
        )
    linear = np.broadcast_to(linear, words.shape)
    first = np.add.reduce((words * (linear * np.uint32(2) + np.uint32(1))).ravel(), dtype=np.uint32)
    h = (words ^ (linear * _GOLDEN)) * _MIX1
    h ^= h >> np.uint32(15)
    h *= _MIX2
    second = np.add.reduce(h.ravel(), dtype=np.uint32)
    return np.array([first, second], np.uint32)


def array_digest(x) -> np.ndarray:
    """This process's part of the digest of `x` (a jax or numpy array): the sum over the
    shards it holds (replica 0 only), to be summed over processes."""
    if isinstance(x, jax.Array):
        total = np.zeros(2, np.uint32)
        for shard in x.addressable_shards:
            if shard.replica_id == 0:
                total += _block_digest(np.asarray(shard.data), x.shape, shard.index)
        return total
    x = np.asarray(x)
    return _block_digest(x, x.shape, tuple(slice(0, n) for n in x.shape))


def tree_digests(items: dict) -> dict[str, str]:
    """{'params/encoder/...': '16 hex digits', ...} for every array of every item, identical
    under any mesh and any number of processes (partial sums are added over processes)."""
    flat = {
        f"{name}/{path}": x for name, tree in items.items() for path, x in flatten(tree).items()
    }
    partial = np.stack([array_digest(x) for x in flat.values()]) if flat else np.zeros((0, 2))
    if jax.process_count() > 1 and flat:
        from jax.experimental import multihost_utils

        gathered = np.asarray(multihost_utils.process_allgather(partial), np.uint32)
        partial = np.add.reduce(gathered, axis=0, dtype=np.uint32)
    return {path: f"{int(a):08x}{int(b):08x}" for path, (a, b) in zip(flat, partial, strict=True)}


def verify_digests(where: str, items: dict, recorded: dict | None) -> None:
    """Raises DamagedCheckpoint naming every array of `items` whose digest differs from the
    recorded one (or is not recorded). `recorded` None: a checkpoint from before digests."""
    if recorded is None:
        return
    names = tuple(items)
    expected = {p: d for p, d in recorded.items() if p.split("/", 1)[0] in names}
    got = tree_digests(items)
    bad = [
        f"{p}: digest {got[p]} != recorded {expected[p]}" if p in expected else f"{p}: no digest"
        for p in got
        if expected.get(p) != got[p]
    ]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DamagedCheckpoint(f"{where}: {len(bad)} array(s) do not match their digests: {shown}")
