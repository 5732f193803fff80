"""Device mesh and the one table mapping logical axis names to mesh axes.

Models name their parameter and activation axes ('vocab', 'embed', 'heads', ...); only this
module knows how those names land on the mesh. Optimizer-state shardings are derived from the
parameters' by matching tree paths, so any optax transformation shards like the params it tracks.

The mesh has up to three axes: `data` (replicas), `fsdp` (replicas that each hold 1/fsdp of the
parameters and optimizer state, ZeRO-3: XLA all-gathers a weight before its matmul and
reduce-scatters its gradient) and `model` (Megatron tensor parallelism). Batches split over
(data, fsdp). `c.partition_preset` picks the rules table:

  ""        DEFAULT_RULES: data parallel over `data`, Megatron over `model` (today's layout)
  dp        every parameter replicated, batch over (data, fsdp)
  fsdp      parameters' and optimizer state's `embed` dimension over `fsdp`
  tp        DEFAULT_RULES with the batch over (data, fsdp)
  fsdp+tp   both: `embed` over `fsdp`, vocab/heads/mlp over `model`

Under a preset that shards over `fsdp`, a parameter the rules leave with no `fsdp` dimension
(untagged, or its `embed` dimension does not divide) has its largest dividing dimension
sharded over `fsdp` if it holds at least FSDP_MIN_BYTES; smaller leftovers stay replicated
(`param_bytes` lists them). `c.partition_rules` is the whole table when no preset is chosen
(empty: DEFAULT_RULES), else rules tried before the preset's (flax takes the first rule whose
mesh axes are still free).

`c.mesh_dcn` ({"data": 2}) is the outer, slow-network part of the mesh: `c.mesh` then gives
the shape inside one TPU slice (devices' `slice_index`), or inside one process where devices
have no slices (GPU nodes), and each mesh axis is the product of the two. Keep `fsdp` and
`model` inside a slice: their collectives run every layer, data parallelism's once a step.
"""

import dataclasses
import logging
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
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

BATCH_AXES = ("data", "fsdp")  # a batch's leading axis splits over both replica axes
_BATCH = (("batch", BATCH_AXES),)
# 'batch' comes first, so an activation [batch, length, embed] takes (data, fsdp) for its batch
# and leaves 'embed' unsharded (fsdp is taken); a parameter has no 'batch' and gets embed/fsdp.
_TP = _BATCH + DEFAULT_RULES[1:]
_FSDP_TP = tuple(("embed", "fsdp") if name == "embed" else (name, axis) for name, axis in _TP)
PRESETS: dict[str, tuple] = {
    "": DEFAULT_RULES,
    "dp": _BATCH,
    "fsdp": _BATCH + (("embed", "fsdp"),),
    "tp": _TP,
    "fsdp+tp": _FSDP_TP,
}

# The fallback's threshold: all-gathering a smaller leaf costs more in latency than the memory
# it would save (BERT-base's biases and LayerNorms are 0.1% of its bytes).
FSDP_MIN_BYTES = 1 << 16


def _axis_names(axis) -> tuple[str, ...]:
    return tuple(axis) if isinstance(axis, tuple | list) else (axis,) if axis else ()


def _resolve(shape: dict[str, int], n: int, where: str) -> list[int]:
    """Sizes of `shape` over `n` devices; one -1 takes what the others leave."""
    sizes = list(shape.values())
    if any(not isinstance(s, int) or isinstance(s, bool) or (s < 1 and s != -1) for s in sizes):
        raise ConfigError(f"{where}={shape}: sizes must be positive integers (or one -1)")
    if sizes.count(-1) > 1:
        raise ConfigError(f"{where} {shape}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n % known:
            raise ConfigError(f"{where} {shape} does not divide {n} devices")
        sizes[sizes.index(-1)] = n // known
    if math.prod(sizes) != n:
        raise ConfigError(
            f"{where} {dict(zip(shape, sizes))} needs {math.prod(sizes)} devices; {n} are available"
        )
    return sizes


def hybrid_device_grid(shape: dict[str, int], dcn: dict[str, int], devices) -> np.ndarray:
    """Devices as an array of the mesh's shape: `shape` inside each slice (or process), `dcn`
    across them; axis i has size shape[i] x dcn[i] and its outer factor crosses granules."""
    unknown = sorted(set(dcn) - set(shape))
    if unknown:
        raise ConfigError(f"mesh_dcn={dcn} names axes {unknown} that mesh={shape} lacks")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in dcn.values()):
        raise ConfigError(f"mesh_dcn={dcn}: sizes must be positive integers")
    # Slices where the devices report several (TPU multislice), else processes (hosts).
    slices = {getattr(d, "slice_index", None) for d in devices} - {None}
    by_process = len(slices) <= 1
    granules = len({d.process_index for d in devices}) if by_process else len(slices)
    if granules == 1:
        raise ConfigError(
            f"mesh_dcn={dcn} needs devices in several TPU slices (slice_index) or several "
            f"processes (hosts); these {len(devices)} devices are all in one slice and one "
            "process: put the axis in mesh instead (mesh_dcn only orders the mesh so that "
            "its outer axes cross the slow network, and here there is none)"
        )
    kind = "processes" if by_process else "slices"
    if granules != math.prod(dcn.values()):
        raise ConfigError(
            f"mesh_dcn={dcn} spans {math.prod(dcn.values())} {kind}; the devices are in {granules}"
        )
    ici = _resolve(shape, len(devices) // granules, f"mesh (inside each of {granules} {kind})")
    outer = [dcn.get(name, 1) for name in shape]
    try:
        return mesh_utils.create_hybrid_device_mesh(
            ici, outer, devices, process_is_granule=by_process
        )
    except ValueError as e:  # uneven granules: some slice or process has other device counts
        raise ConfigError(f"mesh={shape} with mesh_dcn={dcn}: {e}") from e


def make_mesh(shape: dict[str, int], devices=None, dcn: dict[str, int] | None = None) -> Mesh:
    """{'data': -1, 'model': 2} -> Mesh; one -1 takes the remaining devices. `dcn` (axis ->
    size) adds an outer factor across slices or processes (module docstring)."""
    devices = jax.devices() if devices is None else devices
    names = tuple(shape)
    # Auto axes: GSPMD (pjit) semantics, where sharding constraints are hints, not asserts.
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    if dcn and math.prod(dcn.values()) > 1:
        return Mesh(hybrid_device_grid(dict(shape), dict(dcn), devices), names, axis_types=auto)
    sizes = _resolve(dict(shape), len(devices), "mesh")
    return jax.make_mesh(tuple(sizes), names, axis_types=auto, devices=devices)


def mesh_from_config(cfg, devices=None) -> Mesh:
    """The run's mesh: `cfg.mesh`, with `cfg.mesh_dcn` across slices/processes if set."""
    return make_mesh(dict(cfg.mesh), devices, dict(cfg.get("mesh_dcn") or {}))


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways a batch splits (the mesh's replica axes): its size must divide by it."""
    return math.prod(mesh.shape.get(a, 1) for a in BATCH_AXES)


def _restrict(rules, mesh: Mesh) -> tuple:
    """Rules with the mesh axes this mesh lacks dropped (a preset on an old {data, model}
    mesh); a tuple left with one axis becomes that name, so specs read as before."""
    out = []
    for name, axis in rules:
        kept = tuple(a for a in _axis_names(axis) if a in mesh.shape)
        out.append((name, None if not kept else kept[0] if len(kept) == 1 else kept))
    return tuple(out)


def rules_from_config(rules, preset: str = "", mesh: Mesh | None = None) -> tuple:
    """The logical-axis rules: `rules` alone (empty: DEFAULT_RULES) without a preset, else
    `rules` tried before the preset's; restricted to `mesh`'s axes when given."""
    if preset not in PRESETS:
        raise ConfigError(
            f"partition_preset={preset!r} is not a preset; expected one of "
            f"{[p for p in PRESETS if p]} (or '' for DEFAULT_RULES / partition_rules)"
        )
    own = tuple((str(a), tuple(b) if isinstance(b, list | tuple) else b) for a, b in (rules or ()))
    table = own + PRESETS[preset] if preset else own or DEFAULT_RULES
    if mesh is None:
        return table
    unused = [
        a
        for a, n in mesh.shape.items()
        if n > 1 and not any(a in _axis_names(axis) for _, axis in table)
    ]
    if unused:
        logging.warning(
            "mesh axes %s are named by no partition rule: everything is replicated over them "
            "(choose a partition_preset that uses them)",
            unused,
        )
    return _restrict(table, mesh)


def _nbytes(leaf) -> int:
    return math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize


def param_shardings(boxed_params, mesh: Mesh, rules, *, fsdp_min_bytes: int = FSDP_MIN_BYTES):
    """Logically-annotated (boxed) abstract params -> NamedSharding tree (unboxed structure).

    A dimension the mesh axis does not divide (e.g. vocab 30522 over 4 devices) is replicated
    instead, with a warning naming the parameter, rather than failing at placement time. When
    the rules shard parameters over `fsdp`, a leaf left without an fsdp dimension takes it on
    its largest dividing dimension if it holds >= fsdp_min_bytes (the module docstring)."""
    rules = _restrict(rules, mesh)
    specs = nn.get_partition_spec(boxed_params)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    fsdp = mesh.shape.get("fsdp", 1)
    fsdp_rules = any("fsdp" in _axis_names(axis) for name, axis in rules if name != "batch")
    fallback = fsdp > 1 and fsdp_rules

    def fit(path, leaf, sharding):
        dims = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
        for i, axis in enumerate(dims):
            names = _axis_names(axis)
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
        has_fsdp = any("fsdp" in _axis_names(a) for a in dims)
        if fallback and not has_fsdp and _nbytes(leaf) >= fsdp_min_bytes:
            free = [i for i, a in enumerate(dims) if a is None and leaf.shape[i] % fsdp == 0]
            if free:
                dims[max(free, key=lambda i: leaf.shape[i])] = "fsdp"
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
    axis = dict(_restrict(rules, mesh)).get("batch")
    return NamedSharding(mesh, PartitionSpec(axis))


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble per-process numpy batches into global arrays (multi-controller safe)."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


@dataclasses.dataclass(frozen=True)
class ParamBytes:
    """Parameter bytes: in all, held by one device, and the leaves every device holds whole."""

    total: int
    per_device: int
    replicated: tuple[tuple[str, int], ...]  # (path, bytes), largest first

    def __str__(self) -> str:
        lines = [
            f"params: {self.total / 2**20:.2f} MiB, {self.per_device / 2**20:.2f} MiB per "
            f"device; {len(self.replicated)} replicated leaves "
            f"({sum(b for _, b in self.replicated) / 2**20:.2f} MiB)"
        ]
        lines += [f"  replicated {path}: {b} bytes" for path, b in self.replicated[:10]]
        if len(self.replicated) > 10:
            lines.append(f"  ... {len(self.replicated) - 10} more")
        return "\n".join(lines)


def param_bytes(params, shardings) -> ParamBytes:
    """`params` (arrays or ShapeDtypeStructs) placed by `shardings`: what one device holds
    (shards are even: param_shardings replicates any dimension its axes do not divide)."""
    total = per_device = 0
    replicated = []
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(shardings)
    ):
        whole = _nbytes(leaf)
        shard = math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        total += whole
        per_device += shard
        if shard == whole and sharding.mesh.size > 1:
            replicated.append((path_str(path), whole))
    return ParamBytes(total, per_device, tuple(sorted(replicated, key=lambda r: -r[1])))
