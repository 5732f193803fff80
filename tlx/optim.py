"""Optimizer from config: AdamW, warmup + linear decay, clipping, frozen params by regex; and
the train step each optimizer needs.

Transfer settings live here as regexes over '/'-joined parameter paths (big_vision style):
`optim.frozen = ['encoder/.*']` freezes the encoder; an ablation is a one-line config diff.
Every optimizer honours it: the dense ones through `optax.multi_transform`, the row-sparse
ones by never touching a frozen table (tlx.sparse).
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

from tlx import sparse
from tlx.errors import ConfigError


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


def frozen_paths(cfg: ml_collections.ConfigDict, params) -> frozenset[str]:
    """The paths of `params` that some `optim.frozen` regex fullmatches."""
    paths = jax.tree.leaves(tree_paths(params))
    regexes = [re.compile(r) for r in cfg.get("frozen", [])]
    for rx in regexes:
        # A typo would otherwise silently train what the config means to keep fixed.
        if not any(rx.fullmatch(p) for p in paths):
            raise ValueError(f"optim.frozen regex {rx.pattern!r} matches no parameter")
    return frozenset(p for p in paths if any(rx.fullmatch(p) for rx in regexes))


def with_frozen(
    tx: optax.GradientTransformation, frozen: frozenset[str], params
) -> optax.GradientTransformation:
    """`tx` for every parameter outside `frozen`; zero updates (and no state) for those in it."""
    if not frozen:  # unwrapped, so the optimizer state keeps its usual (checkpointed) structure
        return tx
    labels = jax.tree.map(lambda p: "frozen" if p in frozen else "train", tree_paths(params))
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def make_optimizer(cfg: ml_collections.ConfigDict, params, total_steps: int):
    """Returns (optax transformation or tlx.sparse.SparseOptimizer, schedule). `params` only
    supplies the tree structure (the paths `optim.frozen` matches).

    `name`: adamw (default); sgd / adagrad (dense; word-embedding baselines); sparse_sgd /
    sparse_adagrad (row-sparse updates of embedding tables, see tlx.sparse)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    name = cfg.get("name", "adamw")
    known = ("adamw", "sgd", "adagrad", *sparse.NAMES)
    if name not in known:
        raise ValueError(f"unknown optim.name {name!r}: adamw, sgd, adagrad or {sparse.NAMES}")
    frozen = frozen_paths(cfg, params)
    if name in sparse.NAMES:
        return sparse.make_optimizer(cfg, schedule, frozen), schedule
    if name == "sgd":
        tx = optax.sgd(schedule)
    elif name == "adagrad":
        acc = cfg.get("initial_accumulator", 1.0)
        tx = optax.adagrad(schedule, initial_accumulator_value=acc, eps=0.0)
    else:
        tx = optax.chain(
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
    return with_frozen(tx, frozen, params), schedule


def make_train_step(model, objective, tx, schedule: optax.Schedule, microbatches: int = 1):
    """(state, batch) -> (state, metrics), the step `tx` needs: row-sparse for a
    tlx.sparse.SparseOptimizer, value_and_grad + `tx.update` otherwise. `state` is any
    flax.struct dataclass with fields step, params, opt_state, rng; metrics are the
    objective's plus "lr" (the learning rate this step applied) and "grad_norm".

    microbatches = K > 1 (dense optimizers): the gradient of the whole batch accumulated over
    K slices of it (`accumulate_grads`), then one `tx.update` (so clipping sees the whole
    batch's gradient)."""
    if isinstance(tx, sparse.SparseOptimizer):
        if microbatches != 1:
            # Their batches are independent per-pair updates already: nothing to accumulate.
            raise ConfigError(
                f"train.microbatches={microbatches}: optim.name={tx.name!r} (row-sparse) "
                "takes whole batches; use train.microbatches=1"
            )
        if tx.schedule is not schedule:
            # The sparse step applies and reports tx.schedule: a different one would be ignored.
            raise ValueError(f"{tx.name}: schedule differs from the optimizer's own schedule")
        return sparse.make_train_step(model, objective, tx)
    return _dense_train_step(model, objective, tx, schedule, microbatches)


def split_microbatches(batch: dict, microbatches: int) -> dict:
    """Every [B, ...] leaf -> [K, B / K, ...]; microbatch k holds rows k, K + k, 2K + k, ...

    Strided rather than contiguous because of batch sharding: over D data-parallel devices each
    device holds a contiguous block of B / D rows. [B, ...] -> [B / K, K, ...] keeps that split
    on dim 0 (when D divides B / K) and the swap to [K, B / K, ...] is local to each device, so
    every microbatch has B / (K D) rows on every device: all devices work on every microbatch
    and the split moves no data. Contiguous slices would put microbatch k on D / K devices."""

    def split(x):
        if x.shape[0] % microbatches:
            raise ConfigError(
                f"train.microbatches={microbatches} does not divide the batch of {x.shape[0]} rows"
            )
        return jnp.swapaxes(x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def accumulate_grads(model, objective, params, batch: dict, rng, microbatches: int = 1):
    """(grads, metrics) of `objective` on `batch` in train mode (dropout from `rng`).

    K = 1: one value_and_grad. K > 1: a scan over `split_microbatches`; microbatch k draws its
    dropout from fold_in(rng, k) and is scored with `whole=batch`, so every loss term is divided
    by the whole batch's count (objectives module docstring) and the sum of the microbatches'
    gradients, kept in float32, is the whole batch's gradient (cast back to each parameter's
    dtype). Metrics are summed over microbatches: the whole batch's (sum, count) pairs."""

    def loss_fn(params, batch, rng, whole):
        outputs, _ = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
        if whole is None:  # today's call: objectives written before `whole` still work at K = 1
            return objective(outputs, batch)
        return objective(outputs, batch, whole=whole)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if microbatches == 1:
        (_, metrics), grads = grad_fn(params, batch, rng, None)
        return grads, metrics

    def step(acc, xs):
        k, micro = xs
        (_, metrics), grads = grad_fn(params, micro, jax.random.fold_in(rng, k), batch)
        return jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grads), metrics

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    xs = (jnp.arange(microbatches), split_microbatches(batch, microbatches))
    acc, metrics = jax.lax.scan(step, zeros, xs)  # metrics: each leaf [K]
    grads = jax.tree.map(lambda a, p: a.astype(p.dtype), acc, params)
    return grads, jax.tree.map(lambda m: m.sum(0), metrics)


def _dense_train_step(model, objective, tx: optax.GradientTransformation, schedule, microbatches):
    def train_step(state, batch):
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        grads, metrics = accumulate_grads(
            model, objective, state.params, batch, dropout_rng, microbatches
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "lr": schedule(state.step), "grad_norm": optax.global_norm(grads)}
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, metrics

    return train_step
