"""Device mesh and the one table mapping logical axis names to mesh axes.

Models name their parameter and activation axes ('vocab', 'embed', 'heads', ...); only this
module knows how those names land on the mesh. Optimizer-state shardings are derived from the
parameters' by matching tree paths, so any optax transformation shards like the params it tracks.
"""

import logging
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tlx.errors import ConfigError
from tlx.optim import path_str

# Megatron-style tensor parallelism over 'model', data parallelism over 'data'.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("length", None),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("position", None),
    ("segment", None),
    ("classes", None),
)


def make_mesh(shape: dict[str, int], devices=None) -> Mesh:
    """{'data': -1, 'model': 2} -> Mesh; one -1 takes the remaining devices."""
    devices = jax.devices() if devices is None else devices
    names, sizes = list(shape.keys()), list(shape.values())
    if sizes.count(-1) > 1:
        raise ConfigError(f"mesh {shape}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(f"mesh {shape} does not divide {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ConfigError(
            f"mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices; "
            f"{len(devices)} are available"
        )
    # Auto axes: GSPMD (pjit) semantics, where sharding constraints are hints, not asserts.
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(tuple(sizes), tuple(names), axis_types=auto, devices=devices)


def rules_from_config(rules) -> tuple[tuple[str, str | None], ...]:
    return tuple((str(a), None if b is None else b) for a, b in (rules or DEFAULT_RULES))


def param_shardings(boxed_params, mesh: Mesh, rules):
    """Logically-annotated (boxed) abstract params -> NamedSharding tree (unboxed structure).

    A dimension the mesh axis does not divide (e.g. vocab 30522 over 4 devices) is replicated
    instead, with a warning naming the parameter, rather than failing at placement time."""
    specs = nn.get_partition_spec(boxed_params)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)

    def fit(path, leaf, sharding):
        dims = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
        for i, axis in enumerate(dims):
            names = axis if isinstance(axis, tuple) else (axis,) if axis else ()
            size = math.prod(mesh.shape[n] for n in names)
            if size > 1 and leaf.shape[i] % size:
                logging.warning(
                    "%s: dim %d (%d) is not divisible by mesh axes %s (%d); replicating it",
                    path_str(path),
                    i,
                    leaf.shape[i],
                    names,
                    size,
                )
                dims[i] = None
        return NamedSharding(mesh, PartitionSpec(*dims))

    unboxed = nn.unbox(boxed_params)
    return jax.tree_util.tree_map_with_path(lambda p, leaf, s: fit(p, leaf, s), unboxed, shardings)


def derived_shardings(tree, params, params_shardings, mesh: Mesh):
    """Shardings for `tree` (e.g. optimizer state): a leaf whose path ends with a parameter's
    path and has its shape shards like that parameter; everything else is replicated."""
    by_path = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(params_shardings)
    ):
        by_path[path_str(path)] = (leaf.shape, sharding)
    replicated = NamedSharding(mesh, PartitionSpec())

    def pick(path, leaf):
        parts = path_str(path).split("/")
        for i in range(len(parts)):
            hit = by_path.get("/".join(parts[i:]))
            if hit is not None and hit[0] == getattr(leaf, "shape", None):
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, tree)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Batches split their leading axis over whatever mesh axes 'batch' maps to."""
    axis = dict(rules).get("batch")
    return NamedSharding(mesh, PartitionSpec(axis))


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble per-process numpy batches into global arrays (multi-controller safe)."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
