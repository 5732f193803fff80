"""What the loop, the evaluators and the CLIs share: the train state, `build(cfg)` (model,
objective, optimizer, mesh, shardings, jitted steps), the task a config resolves to, and a
run directory's saved config.

`build` asks no question about the paradigm: the model comes from tlx.models' registry, the
objective from `cfg.objective`, and the train step from the optimizer (tlx.optim picks the dense
or the row-sparse step). Evaluators jit their own functions over the same shardings with
`Setup.jit_eval`.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

import data_pipelines
from tlx import checkpoint, models, objectives, optim, partitioning
from tlx.errors import ConfigError


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: dict
    opt_state: optax.OptState
    rng: jnp.ndarray


def resolve_task(cfg: ml_collections.ConfigDict) -> str:
    """Registers (once) the SeqIO task variant the config's data section describes."""
    if cfg.data.data_dir:
        os.environ["TLX_DATA_DIR"] = cfg.data.data_dir
    options = dict(cfg.data.options)
    if cfg.data.get("char_ids"):  # a config.json from before char_ids became a task option
        options["char_ids"] = True
    return data_pipelines.get_task_name(cfg.data.task, vocab=cfg.data.vocab, **options)


def fill_model_dims(cfg: ml_collections.ConfigDict) -> None:
    """Model sizes that come from the data (vocabulary, target vocabulary, classes): a model key
    left None takes the task's value; a key set to another value is an error naming both."""
    dims = data_pipelines.task_dimensions(cfg.data.task_name, cfg.data.vocab)
    for key, value in dims.items():
        if key not in cfg.model:
            continue
        have = cfg.model[key]
        if have is None:
            cfg.model[key] = value
        elif (tuple(have) if isinstance(have, list | tuple) else have) != value:
            raise ConfigError(
                f"model.{key}={have} but task {cfg.data.task!r} (data.vocab="
                f"{cfg.data.vocab!r}) has {value}; set --config.model.{key}={value}"
            )


def make_eval_step(model, objective):
    """(params, batch) -> the objective's metrics, deterministic forward pass."""

    def eval_step(params, batch):
        outputs, _ = model.apply({"params": params}, batch, train=False)
        return objective(outputs, batch)[1]

    return eval_step


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built from a config (also used by tests and benchmarks)."""

    model: nn.Module
    objective: Callable
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    rules: tuple
    state_shardings: TrainState
    abstract_state: TrainState
    init: Callable  # rng -> sharded TrainState
    train_step: Callable  # jitted, donates the state
    eval_step: Callable  # jitted (params, batch) -> objective metrics
    batch_sharding: jax.sharding.NamedSharding

    def jit_eval(self, fn: Callable) -> Callable:
        """`fn(params, batch) -> tree` jitted over the run's param and batch shardings, under
        its logical-axis rules and mesh; the result comes back replicated."""
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        jitted = jax.jit(
            _with_rules(fn, self.rules),
            in_shardings=(self.state_shardings.params, self.batch_sharding),
            out_shardings=replicated,
        )
        return _in_mesh(jitted, self.mesh)


def _with_rules(fn, rules):
    def traced(*args):
        with nn.logical_axis_rules(rules):
            return fn(*args)

    return traced


def _in_mesh(jitted, mesh):
    # The mesh context lets activation constraints name mesh axes; it must wrap the jit call.
    def call(*args):
        with jax.set_mesh(mesh):
            return jitted(*args)

    return call


def build(cfg: ml_collections.ConfigDict, example_batch: dict, devices=None, mesh=None) -> Setup:
    """Model, objective, optimizer, mesh, shardings and jitted steps for the config; `mesh`:
    one the caller already built from the config (else built here, over `devices`)."""
    if mesh is None:
        mesh = partitioning.mesh_from_config(cfg, devices)
    rules = partitioning.rules_from_config(
        cfg.partition_rules, cfg.get("partition_preset", ""), mesh
    )
    model = models.build(cfg.model)
    objective = objectives.from_config(cfg.objective)
    dummy = {k: jnp.zeros(v.shape, v.dtype) for k, v in example_batch.items()}

    boxed = jax.eval_shape(lambda r: model.init(r, dummy), jax.random.PRNGKey(0))["params"]
    abstract_params = nn.unbox(boxed)
    tx, schedule = optim.make_optimizer(cfg.optim, abstract_params, cfg.train.steps)

    def init_state(rng):
        params_rng, dropout_rng = jax.random.split(rng)
        params = nn.unbox(model.init(params_rng, dummy)["params"])
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), dropout_rng)

    abstract_state = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    p_shard = partitioning.param_shardings(boxed, mesh, rules)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state_shardings = TrainState(
        step=replicated,
        params=p_shard,
        opt_state=partitioning.derived_shardings(
            abstract_state.opt_state, abstract_params, p_shard, mesh
        ),
        rng=replicated,
    )
    batch_sharding = partitioning.batch_sharding(mesh, rules)
    init = _in_mesh(jax.jit(_with_rules(init_state, rules), out_shardings=state_shardings), mesh)
    train_step = _in_mesh(
        jax.jit(
            _with_rules(
                optim.make_train_step(
                    model, objective, tx, schedule, cfg.train.get("microbatches", 1)
                ),
                rules,
            ),
            in_shardings=(state_shardings, batch_sharding),
            out_shardings=(state_shardings, replicated),
            donate_argnums=(0,),
        ),
        mesh,
    )
    setup = Setup(
        model,
        objective,
        tx,
        schedule,
        mesh,
        rules,
        state_shardings,
        abstract_state,
        init,
        train_step,
        None,
        batch_sharding,
    )
    setup.eval_step = setup.jit_eval(make_eval_step(model, objective))
    return setup


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """A run directory's saved `config.json` (what tlx.train wrote when it started)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a tlx run directory")
    with open(path) as f:
        try:
            return ml_collections.ConfigDict(json.load(f))
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path} is not valid JSON ({e}); is the run directory intact?"
            ) from e


def restore_params(setup: Setup, cfg, directory: str, step: int | None = None):
    """(step, params) of a run's checkpoint directory placed as `setup` shards them; a
    checkpoint written under older parameter names (tlx.models.migrate) is renamed on read."""
    return checkpoint.restore_params(
        directory,
        setup.abstract_state.params,
        setup.state_shardings.params,
        step,
        rename=functools.partial(models.migrate_paths, cfg.model.name),
    )
