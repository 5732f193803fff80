"""Optimizer from config: AdamW, warmup + linear decay, clipping, frozen params by regex.

Transfer settings live here as regexes over '/'-joined parameter paths (big_vision style):
`optim.frozen = ['encoder/.*']` freezes the encoder; an ablation is a one-line config diff.
"""

import re

import jax
import ml_collections
import optax

from tlx import sparse


def path_str(path) -> str:
    """A jax key path -> 'encoder/layers/layer_0/attention/query/kernel'."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def tree_paths(tree):
    """Same-structure tree of '/'-joined path strings."""
    return jax.tree_util.tree_map_with_path(lambda p, _: path_str(p), tree)


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr` over `warmup_steps` (or `warmup_fraction` of training), then linear
    decay to `lr * end_factor` at `total_steps`."""
    warmup = cfg.get("warmup_steps", 0) or int(round(cfg.get("warmup_fraction", 0.0) * total_steps))
    warmup = min(warmup, total_steps)
    end = cfg.lr * cfg.get("end_factor", 0.0)
    decay = optax.linear_schedule(cfg.lr, end, max(total_steps - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, warmup), decay], boundaries=[warmup]
    )


def _decays(path: str) -> bool:
    # Weight decay on matrices and embeddings only (Dense `kernel`, attention `query_kernel` ...
    # `out_kernel`, tables' `embedding`): never LayerNorm scales or biases.
    leaf = path.rsplit("/", 1)[-1]
    return leaf.endswith("kernel") or leaf == "embedding"


def make_optimizer(cfg: ml_collections.ConfigDict, params, total_steps: int):
    """Returns (optax transformation, schedule). `params` only supplies the tree structure.

    `name`: adamw (default); sgd / adagrad (dense; word-embedding baselines); sparse_sgd /
    sparse_adagrad (row-sparse updates of embedding tables, see tlx.sparse)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    name = cfg.get("name", "adamw")
    if name in sparse.NAMES:
        return sparse.make_optimizer(cfg, schedule), schedule
    if name == "sgd":
        return optax.sgd(schedule), schedule
    if name == "adagrad":
        acc = cfg.get("initial_accumulator", 1.0)
        return optax.adagrad(schedule, initial_accumulator_value=acc, eps=0.0), schedule
    if name != "adamw":
        raise ValueError(f"unknown optim.name {name!r}: adamw, sgd, adagrad or {sparse.NAMES}")
    paths = tree_paths(params)
    frozen = [re.compile(r) for r in cfg.get("frozen", [])]
    for rx in frozen:
        if not any(rx.fullmatch(p) for p in jax.tree.leaves(paths)):
            raise ValueError(f"optim.frozen regex {rx.pattern!r} matches no parameter")
    labels = jax.tree.map(
        lambda p: "frozen" if any(rx.fullmatch(p) for rx in frozen) else "train", paths
    )
    train = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
        optax.adamw(
            schedule,
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=lambda tree: jax.tree.map(_decays, tree_paths(tree)),
        ),
    )
    if not frozen:
        return train, schedule
    tx = optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
