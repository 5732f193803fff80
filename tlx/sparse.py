"""Row-sparse training for embedding tables: gradients of the gathered rows, scatter-added back.

A word2vec step reads ~20k rows of two [V, D] tables; differentiating through the gather would
give dense [V, D] gradients (a scatter into zeros) and a dense optimizer update per step. Here
the model's `lookups(batch)` names the rows, the loss is differentiated with respect to the
gathered rows only, and each update is `table.at[rows].add(...)`, which XLA performs in place
on the donated table. Repeated rows (frequent words) receive the sum of their per-occurrence
updates, as hogwild SGD would apply them one after another.

Optimizers (`optim.name`):
  sparse_sgd      row -= lr * g (word2vec: lr decays linearly with progress);
  sparse_adagrad  acc starts at `initial_accumulator` (glove.c: 1); row -= lr * g / sqrt(acc);
                  then acc += g^2, both per occurrence, as glove.c updates entry by entry.

Frozen tables (`optim.frozen`, resolved by tlx.optim to table names) get no row updates and
keep no accumulator; their rows are still differentiated, so "grad_norm" counts them as the
dense step's does.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

NAMES = ("sparse_sgd", "sparse_adagrad")


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
    """Stands in for an optax transformation in the train state: `init` builds the state
    (AdaGrad accumulators shaped like the params, so they shard like them); `apply` updates."""

    name: str
    schedule: optax.Schedule
    initial_accumulator: float = 1.0
    duplicates: str = "sum"  # sum | mean | sqrt: how a row seen n times in a batch is updated
    frozen: frozenset[str] = frozenset()  # table names that are never updated

    def init(self, params):
        if self.name == "sparse_sgd":  # stateless; the count keeps the state a checkpointable tree
            return {"count": jnp.zeros([], jnp.int32)}
        acc = self.initial_accumulator
        return {
            name: jax.tree.map(lambda p: jnp.full_like(p, acc), table)
            for name, table in params.items()
            if name not in self.frozen
        }

    def update(self, *args, **kwargs):
        raise TypeError(f"{self.name} updates rows through tlx.sparse.make_train_step")

    def apply(self, step, params: dict, opt_state: dict, idx: dict, grads: dict):
        lr = self.schedule(step)
        params, opt_state = dict(params), dict(opt_state)
        if "count" in opt_state:
            opt_state["count"] = opt_state["count"] + 1
        for name, rows in idx.items():
            if name in self.frozen:
                continue
            flat = rows.reshape(-1)  # [N]
            g = grads[name].reshape(flat.shape[0], *params[name].shape[1:])  # [N, ...]
            if self.duplicates != "sum":
                n = jnp.zeros(params[name].shape[0], g.dtype).at[flat].add(1.0)[flat]  # [N]
                n = n if self.duplicates == "mean" else jnp.sqrt(n)
                g = g / n.reshape(-1, *([1] * (g.ndim - 1)))
            if self.name == "sparse_sgd":
                params[name] = params[name].at[flat].add(-lr * g)
            else:
                acc = opt_state[name]
                params[name] = params[name].at[flat].add(-lr * g * jax.lax.rsqrt(acc[flat]))
                opt_state[name] = acc.at[flat].add(g * g)
        return params, opt_state


def make_optimizer(cfg, schedule: optax.Schedule, frozen=frozenset()) -> SparseOptimizer:
    """`frozen`: the parameter paths `optim.frozen` matched (tlx.optim.frozen_paths)."""
    if cfg.name not in NAMES:
        raise ValueError(f"optim.name={cfg.name!r} is not a sparse optimizer {NAMES}")
    return SparseOptimizer(
        cfg.name,
        schedule,
        cfg.get("initial_accumulator", 1.0),
        cfg.get("duplicates", "sum"),
        frozenset(frozen),
    )


def make_train_step(model, objective, opt: SparseOptimizer):
    """(state, batch) -> (state, metrics) for models with `lookups` (tlx.models.embeddings)."""

    def train_step(state, batch):
        idx = model.apply({"params": state.params}, batch, method="lookups")
        rows = {name: state.params[name][i] for name, i in idx.items()}

        def loss_fn(rows):
            outputs, _ = model.apply({"params": state.params}, batch, train=True, rows=rows)
            return objective(outputs, batch)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(rows)
        params, opt_state = opt.apply(state.step, state.params, state.opt_state, idx, grads)
        metrics = {
            **metrics,
            "lr": opt.schedule(state.step),
            "grad_norm": optax.global_norm(grads),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step
