"""Orbax checkpoints and the one restore order.

Restore order (big_vision's, written once in `restore_or_init`):
  1. the run's own latest checkpoint in `workdir/checkpoints` (resume: params, optimizer state,
     step, RNG, data position);
  2. else `init_from`: params only, from another run's latest checkpoint, loaded by name with
     regexes saying which model params keep their init (`dont_load`) and which checkpoint
     params are deliberately unused (`ignore`); every other mismatch is an error naming it;
  3. else the fresh initialisation.
"""

import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from tlx.optim import path_str

ITEMS = ("params", "opt_state", "meta")


class TransferError(ValueError):
    """A pretrained checkpoint does not fit the model; the message names the parameter."""


def manager(directory: str, *, every: int = 1000, max_to_keep: int | None = 3, async_save=True):
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every,
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        create=True,
    )
    handlers = {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=handlers
    )


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict, *, force=False) -> bool:
    """Saves params, optimizer state and JSON meta (RNG, data position) if `step` is due."""
    return mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta),
        ),
        force=force,
    )


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, shardings):
    """Resume from the latest step: (step, params, opt_state, meta), or None if there is none."""
    step = mngr.latest_step()
    if step is None:
        return None
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(abstract_state.params, shardings.params)),
            opt_state=ocp.args.StandardRestore(
                _abstract(abstract_state.opt_state, shardings.opt_state)
            ),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return step, restored["params"], restored["opt_state"], restored["meta"]


def flatten(tree) -> dict:
    return {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def load_pretrained(
    init_from: str,
    params,
    param_shardings,
    *,
    dont_load=(),
    ignore=(),
):
    """Loads `params` (a concrete, sharded tree) from the latest checkpoint under `init_from`.

    `dont_load`: regexes of model params that keep their fresh init (e.g. a new task head).
    `ignore`: regexes of checkpoint params with no place in the model (e.g. pretraining heads).
    Anything else missing, extra or wrongly shaped raises TransferError naming it.
    """
    ckpt_dir = os.path.join(init_from, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        ckpt_dir = init_from  # also accept the checkpoints directory itself
    mngr = ocp.CheckpointManager(
        os.path.abspath(ckpt_dir),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_handlers={"params": ocp.StandardCheckpointHandler()},
    )
    step = mngr.latest_step()
    if step is None:
        raise TransferError(f"init_from={init_from!r}: no Orbax checkpoint found in {ckpt_dir}")
    stored = flatten(mngr.item_metadata(step)["params"])
    model = flatten(params)
    shard = flatten(param_shardings)
    keep_init = [re.compile(r) for r in dont_load]
    unused = [re.compile(r) for r in ignore]

    problems = []
    for path, x in model.items():
        if any(r.fullmatch(path) for r in keep_init):
            continue
        if path not in stored:
            problems.append(f"model parameter {path} {x.shape} is missing from the checkpoint")
        elif tuple(stored[path].shape) != tuple(x.shape):
            problems.append(
                f"parameter {path}: checkpoint shape {tuple(stored[path].shape)} != model "
                f"shape {tuple(x.shape)}"
            )
    for path in stored:
        if path not in model and not any(r.fullmatch(path) for r in unused):
            problems.append(f"checkpoint parameter {path} has no place in the model")
    if problems:
        raise TransferError(
            f"cannot load {ckpt_dir} (step {step}) into the model:\n  "
            + "\n  ".join(problems)
            + "\n(use transfer.dont_load / transfer.ignore regexes for intended differences)"
        )

    mesh = jax.tree.leaves(param_shardings)[0].mesh
    replicated = NamedSharding(mesh, PartitionSpec())
    target = {
        path: jax.ShapeDtypeStruct(
            tuple(meta.shape), np.dtype(meta.dtype), sharding=shard.get(path, replicated)
        )
        for path, meta in stored.items()
    }
    restored = flatten(
        mngr.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(unflatten(target)))
        )["params"]
    )
    mngr.close()
    loaded = {
        path: (x if any(r.fullmatch(path) for r in keep_init) else restored[path].astype(x.dtype))
        for path, x in model.items()
    }
    leaves = [loaded[path_str(p)] for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    return jax.tree.unflatten(jax.tree.structure(params), leaves), step


# ---------------------------------------------------------------------------- best-dev params

BEST_DIR = "best"


def best_manager(workdir: str) -> ocp.CheckpointManager:
    """`workdir/best`: the params (and metrics) of the best dev evaluation so far, one kept."""
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, BEST_DIR)),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        item_handlers={
            "params": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )


def best_so_far(mngr: ocp.CheckpointManager) -> dict | None:
    """The meta ({'step', 'metric', 'value', 'metrics'}) of the kept best checkpoint, if any."""
    step = mngr.latest_step()
    if step is None:
        return None
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def save_best(mngr: ocp.CheckpointManager, step: int, params, meta: dict) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    mngr.wait_until_finished()


def restore_params(directory: str, abstract_params, shardings, step: int | None = None):
    """(step, params) from a checkpoint directory (a run's `checkpoints/` or `best/`), placed
    with `shardings`; raises FileNotFoundError naming the directory if it holds none."""
    mngr = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_handlers={"params": ocp.StandardCheckpointHandler()},
    )
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
        raise FileNotFoundError(
            f"no checkpoint {'' if step is None else f'at step {step} '}in {directory} "
            f"(steps there: {list(mngr.all_steps())})"
        )
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(abstract_params, shardings))
        ),
    )
    mngr.close()
    return step, restored["params"]


def load_word_vectors(source: str, vocab_spec: str, where: str, params, shardings):
    """(params with the table at path `where` replaced by `source`'s vectors (tlx.wordvec:
    glove6b, a word2vec/GloVe file, a tlx run dir) aligned to the ids of data vocabulary
    `vocab_spec`, words found, vocabulary size). A missing or mis-shaped table is an error."""
    import data_pipelines
    from tlx import wordvec  # only word-vector runs read GloVe / word2vec files

    vocab = data_pipelines.vocabularies.get_vocabulary(vocab_spec)
    tokens = data_pipelines.vocabularies.id_to_token(vocab)
    matrix, hits = wordvec.embedding_matrix(wordvec.load_source(source), tokens)
    flat = flatten(params)
    if where not in flat:
        tables = [p for p in flat if p.endswith("embedding")]
        raise TransferError(
            f"transfer.vectors_param={where!r} is not a model parameter; tables: {tables}"
        )
    if tuple(flat[where].shape) != matrix.shape:
        raise TransferError(
            f"parameter {where}: model shape {tuple(flat[where].shape)} != {matrix.shape} "
            f"from init_vectors={source!r} ({len(tokens)} tokens of data.vocab={vocab_spec!r}"
            f" x {matrix.shape[1]}-dim vectors); set model.embed_dim / model.vocab_size"
        )
    flat[where] = jax.device_put(matrix.astype(flat[where].dtype), flatten(shardings)[where])
    return unflatten(flat), hits, len(tokens)
