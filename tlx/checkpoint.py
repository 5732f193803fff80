"""Orbax checkpoints, verified, and the one restore order.

Restore order (big_vision's, written once in `restore_or_init`):
  1. the run's own latest checkpoint in `workdir/checkpoints` (resume: params, optimizer state,
     step, RNG, data position);
  2. else `init_from`: params only, from another run's latest checkpoint, loaded by name with
     regexes saying which model params keep their init (`dont_load`) and which checkpoint
     params are deliberately unused (`ignore`); every other mismatch is an error naming it;
  3. else the fresh initialisation.

Every checkpoint records a digest of every array it saves (`meta["digests"]`, see
`tree_digests`), and every restore checks the arrays it read against them. A step that cannot be
read (missing item, manifest or metadata, truncated or corrupt file) or whose arrays do not
match their digests is *damaged*: it is reported naming the step directory and what is wrong,
and the newest good step is used instead. A run's own damaged steps are set aside (moved, never
deleted) to `WORKDIR/damaged_checkpoints/`; another run's (`init_from`, `tlx.evaluate`,
`tlx.convert export-hf`) are only reported, never moved. A checkpoint that reads fine but does
not fit the model (other shapes, other parameter names) is not damage: it is an error naming the
parameter, and nothing is moved.

Checkpoint directories are `etils.epath` paths, Orbax's own path layer: a local path (made
absolute, as os.path.abspath does) or a URL such as `gs://bucket/run/checkpoints`. Damaged steps
of a run whose checkpoints live elsewhere than WORKDIR/checkpoints are set aside beside them
(`DIR/../damaged_checkpoints`): a move within one filesystem or bucket, a rename.
"""

import datetime
import os
import re
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from tlx.digests import DamagedCheckpoint, flatten, tree_digests, verify_digests
from tlx.errors import CheckpointError, TransferError  # noqa: F401 (checkpoint.TransferError)
from tlx.models.migrate import unflatten
from tlx.optim import path_str

ITEMS = ("params", "opt_state", "meta")
DAMAGED_DIR = "damaged_checkpoints"


def path(directory) -> epath.Path:
    """`directory` as an epath.Path: a URL (gs://, s3://, ...) as given, a local path absolute."""
    text = os.fspath(directory)
    return epath.Path(text if "://" in text else os.path.abspath(text))


def is_url(directory) -> bool:
    return "://" in os.fspath(directory)


def run_checkpoints(cfg, workdir: str) -> str:
    """A run's checkpoints directory: `cfg.checkpoint.directory` (a path or URL), else
    WORKDIR/checkpoints."""
    custom = (cfg.get("checkpoint") or {}).get("directory", "")  # absent in older run configs
    return custom or os.path.join(workdir, "checkpoints")


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
    return ocp.CheckpointManager(path(directory), options=options, item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict, *, force=False) -> bool:
    """Saves params, optimizer state and JSON meta (RNG, data position, the arrays' digests)
    if `step` is due."""
    if not force and not mngr.should_save(step):
        return False
    digests = tree_digests({"params": state.params, "opt_state": state.opt_state})
    meta = {**meta, "digests": digests}
    return mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta),
        ),
        force=force,
    )


def parse_choice(value: str, names=("best", "latest")) -> int | None:
    """A --checkpoint flag: one of `names` (None: the newest good step there) or a step."""
    if value in names:
        return None
    if not value.isdigit():
        raise CheckpointError(f"--checkpoint={value!r}: expected one of {list(names)} or a step")
    return int(value)


def has_steps(directory: str) -> bool:
    """Whether a checkpoints directory holds any finished step (a run to resume)."""
    root = path(directory)
    return root.is_dir() and any(p.name.isdigit() for p in root.iterdir())


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _report(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _reader(directory: str) -> ocp.CheckpointManager:
    handlers = {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(
        path(directory),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        # Every item a tlx step can hold gets its handler, also those not read: Orbax warns
        # about each item on disk it has no handler for ("found ... but could not be restored").
        item_handlers=handlers,
    )


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def _fits(where: str, stored, abstract) -> None:
    """A readable checkpoint whose tree differs from the model's: an error, not damage."""
    have, want = flatten(stored), flatten(abstract)
    problems = [f"{p} is missing" for p in want if p not in have]
    problems += [f"{p} is not in the model" for p in have if p not in want]
    problems += [
        f"{p}: checkpoint shape {tuple(have[p].shape)} != model shape {tuple(want[p].shape)}"
        for p in want
        if p in have and tuple(have[p].shape) != tuple(want[p].shape)
    ]
    if problems:
        raise CheckpointError(
            f"{where} does not fit the model the config builds:\n  " + "\n  ".join(problems[:20])
        )


def read_step(mngr: ocp.CheckpointManager, step: int, items, make_targets) -> tuple[dict, dict]:
    """(restored items, meta) of one step, verified against its recorded digests.

    `make_targets(metadata)` gets {item: stored tree metadata} for `items` and returns {item:
    abstract tree with shardings} to restore; it raises its own error (not DamagedCheckpoint)
    if the tree does not fit the model. Anything unreadable, missing or not matching its
    digests raises DamagedCheckpoint naming the step directory."""
    where = str(path(mngr.directory) / str(step))
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 - any failure to read written bytes is damage
        raise DamagedCheckpoint(f"{where}: its meta item cannot be read ({_describe(e)})") from e
    if not isinstance(meta, dict):
        raise DamagedCheckpoint(f"{where}: its meta item is not a JSON object")
    try:
        stored = mngr.item_metadata(step)
        metadata = {name: stored[name] if name in stored else None for name in items}
    except Exception as e:  # noqa: BLE001
        raise DamagedCheckpoint(f"{where}: its metadata cannot be read ({_describe(e)})") from e
    for name, tree in metadata.items():
        if tree is None:
            raise DamagedCheckpoint(f"{where}: item {name!r} is missing or unreadable")
    targets = make_targets(metadata)
    try:
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(t) for name, t in targets.items()}
            ),
        )
        restored = {name: restored[name] for name in targets}
    except Exception as e:  # noqa: BLE001
        raise DamagedCheckpoint(f"{where}: its arrays cannot be read ({_describe(e)})") from e
    verify_digests(where, restored, meta.get("digests"))
    if "digests" not in meta:
        _report(f"{where} records no array digests (written before tlx kept them): not verified")
    return restored, meta


def _fitting(where: str, abstract: dict):
    """make_targets for items whose abstract trees are known: checks they fit, returns them."""

    def make(metadata: dict) -> dict:
        for name, tree in abstract.items():
            _fits(f"{where} item {name!r}", metadata[name], tree)
        return abstract

    return make


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def set_aside(step_dir, workdir, reason: str) -> str:
    """Moves a damaged step (or an interrupted save's temporary directory) to
    WORKDIR/damaged_checkpoints/NAME-TIME (process 0; never deleted) with the reason beside it.
    Both are epath paths or URLs; the move is a rename (a local one across filesystems: a copy)."""
    src = path(step_dir)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    dest = path(workdir) / DAMAGED_DIR / f"{src.name}-{stamp}"
    if jax.process_index() == 0:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            src.rename(dest)
        except OSError:
            if is_url(src) or is_url(dest):
                raise
            shutil.move(src, dest)  # another local filesystem: rename cannot, move copies
        dest.parent.joinpath(f"{dest.name}.reason.txt").write_text(reason + "\n")
    _sync(f"tlx_set_aside_{dest.name}")
    return str(dest)


def newest_good(mngr, steps, read, *, workdir: str | None = None):
    """(step, read(step)) for the newest step of `steps` that is not damaged; each damaged one
    is reported and, with `workdir` (the run's own checkpoints), set aside. None if none is good."""
    for step in sorted(steps, reverse=True):
        try:
            return step, read(step)
        except DamagedCheckpoint as e:
            if workdir is None:
                _report(f"checkpoint {e}; trying the previous step")
                continue
            dest = set_aside(path(mngr.directory) / str(step), workdir, str(e))
            _report(f"checkpoint {e}; set aside to {dest}; trying the previous step")
            mngr.reload()
    return None


def set_aside_incomplete(mngr: ocp.CheckpointManager, workdir: str) -> None:
    """Interrupted saves leave `STEP.orbax-checkpoint-tmp[-*]` directories: reported, set aside."""
    root = path(mngr.directory)
    if not root.is_dir():
        return
    for name in sorted(p.name for p in root.iterdir()):
        if ".orbax-checkpoint-tmp" in name:
            dest = set_aside(root / name, workdir, "an interrupted save")
            _report(f"{root / name} is an interrupted save (incomplete); set aside to {dest}")


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, shardings, workdir=None):
    """Resume from the newest good step: (step, params, opt_state, meta), or None if there is
    none. Damaged steps are set aside under `workdir` (default: the manager's parent)."""
    workdir = workdir or str(path(mngr.directory).parent)
    set_aside_incomplete(mngr, workdir)
    steps = mngr.all_steps()
    if not steps:
        return None
    abstract = {
        "params": _abstract(abstract_state.params, shardings.params),
        "opt_state": _abstract(abstract_state.opt_state, shardings.opt_state),
    }
    make = _fitting(f"the run's checkpoint in {mngr.directory}", abstract)
    found = newest_good(
        mngr, steps, lambda s: read_step(mngr, s, tuple(abstract), make), workdir=workdir
    )
    if found is None:
        raise CheckpointError(
            f"every checkpoint in {mngr.directory} (steps {sorted(steps)}) is damaged; all were "
            f"set aside to {path(workdir) / DAMAGED_DIR}. Rerun to start the run afresh, "
            "or restore a good copy of the checkpoints"
        )
    step, (restored, meta) = found
    return step, restored["params"], restored["opt_state"], meta


def load_pretrained(
    init_from: str,
    params,
    param_shardings,
    *,
    dont_load=(),
    ignore=(),
    rename=None,
):
    """Loads `params` (a concrete, sharded tree) from the latest checkpoint under `init_from`.

    `rename(stored paths) -> {stored path: model path}` maps a checkpoint written under other
    parameter names (a pretraining run's `decoder/`, a task model from before `encoder/` +
    `head/`, tlx.models.migrate_paths) onto the model's; paths it leaves alone load as they are.

    `dont_load`: regexes of model params that keep their fresh init (e.g. a new task head).
    `ignore`: regexes of checkpoint params with no place in the model (e.g. pretraining heads).
    Anything else missing, extra or wrongly shaped raises TransferError naming it.
    """
    if not path(init_from).is_dir():
        raise TransferError(f"transfer.init_from={init_from!r} is not a directory")
    ckpt_dir = os.path.join(init_from, "checkpoints")  # also joins a URL
    if not path(ckpt_dir).is_dir():
        ckpt_dir = init_from  # also accept the checkpoints directory itself
    mngr = _reader(ckpt_dir)
    steps = mngr.all_steps()
    if not steps:
        raise TransferError(f"init_from={init_from!r}: no Orbax checkpoint found in {ckpt_dir}")
    model = flatten(params)
    shard = flatten(param_shardings)
    keep_init = [re.compile(r) for r in dont_load]
    unused = [re.compile(r) for r in ignore]
    mesh = jax.tree.leaves(param_shardings)[0].mesh
    replicated = NamedSharding(mesh, PartitionSpec())

    to_model: dict[str, str] = {}

    def make_targets(metadata: dict) -> dict:
        raw = flatten(metadata["params"])
        to_model.update(rename(list(raw)) if rename is not None else {p: p for p in raw})
        stored = {to_model[p]: m for p, m in raw.items()}
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
                f"cannot load {ckpt_dir} into the model:\n  "
                + "\n  ".join(problems)
                + "\n(use transfer.dont_load / transfer.ignore regexes for intended differences)"
            )
        target = {  # restored under the stored names (their digests), placed as the model's
            path: jax.ShapeDtypeStruct(
                tuple(meta.shape),
                np.dtype(meta.dtype),
                sharding=shard.get(to_model[path], replicated),
            )
            for path, meta in raw.items()
        }
        return {"params": unflatten(target)}

    found = newest_good(mngr, steps, lambda s: read_step(mngr, s, ("params",), make_targets))
    mngr.close()
    if found is None:
        raise TransferError(
            f"init_from={init_from!r}: every checkpoint in {ckpt_dir} (steps {sorted(steps)}) "
            "is damaged (see the warnings above)"
        )
    step, (restored, _) = found
    restored = {to_model[p]: x for p, x in flatten(restored["params"]).items()}
    loaded = {
        path: (x if any(r.fullmatch(path) for r in keep_init) else restored[path].astype(x.dtype))
        for path, x in model.items()
    }
    leaves = [loaded[path_str(p)] for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    return jax.tree.unflatten(jax.tree.structure(params), leaves), step


# ---------------------------------------------------------------------------- best-dev params

BEST_DIR = "best"


def restore_params(
    directory: str, abstract_params, shardings, step: int | None = None, *, rename=None
):
    """(step, params) from a checkpoint directory (a run's `checkpoints/` or `best/`), placed
    with `shardings` and verified. `step` None: the newest good step (damaged ones reported);
    an explicit step that is damaged is an error. FileNotFoundError if there is none.
    `rename(stored paths) -> {stored path: model path}` (tlx.models.migrate_paths) reads a
    checkpoint written under older parameter names."""
    mngr = _reader(directory)
    steps = mngr.all_steps()
    if not steps or (step is not None and step not in steps):
        raise FileNotFoundError(
            f"no checkpoint {'' if step is None else f'at step {step} '}in {directory} "
            f"(steps there: {sorted(steps)})"
        )
    model = flatten(_abstract(abstract_params, shardings))
    to_model: dict[str, str] = {}

    def make(metadata: dict) -> dict:
        raw = flatten(metadata["params"])
        to_model.update(rename(list(raw)) if rename is not None else {p: p for p in raw})
        stored = unflatten({to_model.get(p, p): m for p, m in raw.items()})
        _fits(f"checkpoint {directory} item 'params'", stored, unflatten(model))
        return {"params": unflatten({p: model[to_model.get(p, p)] for p in raw})}

    read = lambda s: read_step(mngr, s, ("params",), make)  # noqa: E731
    found = (step, read(step)) if step is not None else newest_good(mngr, steps, read)
    mngr.close()
    if found is None:
        raise CheckpointError(
            f"every checkpoint in {directory} (steps {sorted(steps)}) is damaged (see above)"
        )
    step, (restored, _) = found
    flat = {to_model.get(p, p): x for p, x in flatten(restored["params"]).items()}
    leaves = [flat[path_str(p)] for p, _ in jax.tree_util.tree_leaves_with_path(abstract_params)]
    return step, jax.tree.unflatten(jax.tree.structure(abstract_params), leaves)


# ------------------------------------------------------------------------ the restore order


def _stored_under_old_names(mngr, rename) -> bool:
    """Whether the newest step's params carry paths that `rename` maps to other ones."""
    try:
        stored = list(flatten(mngr.item_metadata(mngr.latest_step())["params"]))
    except Exception:  # noqa: BLE001 - unreadable: the original error says so
        return False
    return any(src != dst for src, dst in rename(stored).items())


def restore_or_init(mngr, state, shardings, transfer, *, vocab: str, rename=None, reinit=None):
    """The one restore order: (state, meta of the resumed step or None).

    1. the run's own newest good checkpoint in `mngr` (params, optimizer state, step, RNG;
       `meta` holds the data position);
    2. else `transfer.init_from` (params only, load_pretrained with `rename`) and/or
       `transfer.init_vectors` (word vectors into the table at `transfer.vectors_param`), with
       the optimizer state made afresh for the loaded params (`reinit(params)`);
    3. else `state`, the fresh initialisation."""
    try:
        resumed = restore_latest(mngr, state, shardings)
    except CheckpointError as e:
        if rename is not None and _stored_under_old_names(mngr, rename):
            workdir = path(mngr.directory).parent
            raise CheckpointError(
                f"{e}\nThese checkpoints name their parameters as tlx did before the encoder/ "
                "+ head/ layout (tlx.models.migrate): a run is not resumed across that change. "
                f"Score it with `python -m tlx.evaluate --workdir={workdir}` (renamed on "
                "read), or start a new run from it with --config.transfer.init_from"
            ) from e
        raise
    if resumed is not None:
        step, params, opt_state, meta = resumed
        rng = np.array(meta["rng"], np.uint32)
        state = state.replace(step=np.int32(step), params=params, opt_state=opt_state, rng=rng)
        print(f"resumed from {mngr.directory} step {step}", flush=True)
        return jax.device_put(state, shardings), meta
    if not (transfer.init_from or transfer.get("init_vectors")):
        return state, None
    params = state.params
    if transfer.init_from:
        params, src_step = load_pretrained(
            transfer.init_from,
            params,
            shardings.params,
            dont_load=transfer.dont_load,
            ignore=transfer.ignore,
            rename=rename,
        )
        print(f"initialised from {transfer.init_from} (step {src_step})", flush=True)
    if transfer.get("init_vectors"):
        where = transfer.vectors_param
        from tlx import wordvec  # reads GloVe / word2vec files: only word-vector runs

        params, hits, n = wordvec.load_into(
            params, shardings.params, transfer.init_vectors, vocab, where
        )
        print(f"initialised {where} from {transfer.init_vectors}: {hits:,} / {n:,} words")
    return state.replace(params=params, opt_state=reinit(params)), None
