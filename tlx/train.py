r"""The one training loop: pretraining and finetuning for every paradigm.

  python -m tlx.train --config=configs/bert/pretrain.py:size=mini --workdir=runs/bert_mini \
      [--config.train.steps=1000 ...]

Sections, top to bottom: distributed init, mesh, data, model + optimizer, shard + init,
restore, train steps with logging / eval / checkpoints.
"""

import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import data_pipelines
from tlx import (
    checkpoint,
    config_checks,
    evaluate,
    input_pipeline,
    models,
    objectives,
    optim,
    partitioning,
    sparse,
)
from tlx.data import verify as data_verify
from tlx.errors import ConfigError, DivergedError, cli_boundary
from tlx.metrics import MetricsLog, reduce


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: dict
    opt_state: optax.OptState
    rng: jnp.ndarray


def maybe_initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
    """Joins JAX's multi-controller runtime when launched as one of several processes.

    launch/multiprocess.sh sets TLX_COORDINATOR / TLX_NUM_PROCESSES / TLX_PROCESS_ID; on TPU pods
    and SLURM clusters `jax.distributed.initialize()` discovers them itself (config.multihost)."""
    if jax.distributed.is_initialized():
        return
    if "TLX_NUM_PROCESSES" in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=os.environ["TLX_COORDINATOR"],
            num_processes=int(os.environ["TLX_NUM_PROCESSES"]),
            process_id=int(os.environ["TLX_PROCESS_ID"]),
        )
    elif cfg.get("multihost", False):
        jax.distributed.initialize()


def resolve_task(cfg: ml_collections.ConfigDict) -> str:
    """Registers (once) the SeqIO task variant the config's data section describes."""
    if cfg.data.data_dir:
        os.environ["TLX_DATA_DIR"] = cfg.data.data_dir
    return data_pipelines.get_task_name(cfg.data.task, vocab=cfg.data.vocab, **cfg.data.options)


def make_train_step(model, objective, tx, schedule):
    def train_step(state: TrainState, batch):
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            outputs, _ = model.apply(
                {"params": params}, batch, train=True, rngs={"dropout": dropout_rng}
            )
            return objective(outputs, batch)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "lr": schedule(state.step), "grad_norm": optax.global_norm(grads)}
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, metrics

    return train_step


def make_eval_step(model, objective):
    def eval_step(params, batch):
        outputs, _ = model.apply({"params": params}, batch, train=False)
        return objective(outputs, batch)[1]

    return eval_step


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built from a config (also used by tests and benchmarks)."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    rules: tuple
    state_shardings: TrainState
    abstract_state: TrainState
    init: callable  # rng -> sharded TrainState
    train_step: callable  # jitted, donates the state
    eval_step: callable
    batch_sharding: jax.sharding.NamedSharding
    predict_step: Callable | None = None  # downstream tasks: argmax + targets, replicated


def build(cfg: ml_collections.ConfigDict, example_batch: dict, devices=None) -> Setup:
    """Model, optimizer, mesh, shardings and jitted steps for the config."""
    mesh = partitioning.make_mesh(dict(cfg.mesh), devices)
    rules = partitioning.rules_from_config(cfg.partition_rules)
    model = models.build(cfg.model)
    objective = objectives.get(
        cfg.objective, cfg.get("lm_coef", 0.0), cfg.get("xent_chunk", objectives.XENT_CHUNK)
    )
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

    def with_rules(fn):
        def traced(*args):
            with nn.logical_axis_rules(rules):
                return fn(*args)

        return traced

    def in_mesh(jitted):
        # The mesh context lets activation constraints name mesh axes; it must wrap the jit call.
        def call(*args):
            with jax.set_mesh(mesh):
                return jitted(*args)

        return call

    init = in_mesh(jax.jit(with_rules(init_state), out_shardings=state_shardings))
    if isinstance(tx, sparse.SparseOptimizer):  # embedding tables: row-sparse updates
        step_fn = sparse.make_train_step(model, objective, tx)
    else:
        step_fn = make_train_step(model, objective, tx, schedule)
    train_step = in_mesh(
        jax.jit(
            with_rules(step_fn),
            in_shardings=(state_shardings, batch_sharding),
            out_shardings=(state_shardings, replicated),
            donate_argnums=(0,),
        )
    )
    eval_step = in_mesh(
        jax.jit(
            with_rules(make_eval_step(model, objective)),
            in_shardings=(state_shardings.params, batch_sharding),
            out_shardings=replicated,
        )
    )
    info = evaluate.downstream(cfg.data.get("task_name", cfg.data.task))
    predict_step = None
    if info is not None:
        predict_step = in_mesh(
            jax.jit(
                with_rules(evaluate.make_predict_step(model, objective, info.kind)),
                in_shardings=(state_shardings.params, batch_sharding),
                out_shardings=replicated,
            )
        )
    return Setup(
        model,
        tx,
        schedule,
        mesh,
        rules,
        state_shardings,
        abstract_state,
        init,
        train_step,
        eval_step,
        batch_sharding,
        predict_step,
    )


def _kill_for_test(step: int) -> None:
    """Fault injection for the resume test: TLX_FAULT_KILL_AFTER_STEP=N SIGKILLs the process
    right after step N's checkpoint is on disk, with no cleanup, as a preempted job would die."""
    at = os.environ.get("TLX_FAULT_KILL_AFTER_STEP")
    if at is not None and step == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_json_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _apply_epochs(cfg: ml_collections.ConfigDict) -> None:
    """`train.epochs` > 0 (the BERT finetuning recipe): steps = epochs x train examples / batch,
    and `train.eval_every` <= 0 means once per epoch."""
    epochs = cfg.train.get("epochs", 0)
    if epochs <= 0:
        if cfg.train.eval_every <= 0:
            raise ConfigError(
                f"train.eval_every={cfg.train.eval_every} (<= 0: once per epoch) needs "
                "train.epochs > 0"
            )
        return
    config_checks.check_positive(cfg, "train.batch_size")
    n = input_pipeline.split_size(cfg, "train")
    per_epoch = max(1, math.ceil(n / cfg.train.batch_size))
    cfg.train.steps = max(1, round(epochs * n / cfg.train.batch_size))
    if cfg.train.eval_every <= 0:
        cfg.train.eval_every = per_epoch
    print(
        f"{cfg.data.task}: {n} training examples, {epochs:g} epochs = {cfg.train.steps} steps "
        f"of {cfg.train.batch_size}; evaluating every {cfg.train.eval_every} steps",
        flush=True,
    )


class BestTracker:
    """Keeps the params of the best dev evaluation in `workdir/best` (finetuning runs)."""

    def __init__(self, workdir: str, info):
        self.metric = info.primary_metric if info is not None else None
        self.mngr = checkpoint.best_manager(workdir) if self.metric else None
        self.best = checkpoint.best_so_far(self.mngr) if self.mngr else None
        self.workdir = workdir

    def update(self, step: int, params, metrics: dict[str, float]) -> None:
        if self.mngr is None:
            return
        value = metrics[self.metric]
        if self.best is not None and not value > self.best["value"]:
            return
        self.best = {"step": step, "metric": self.metric, "value": value, "metrics": metrics}
        checkpoint.save_best(self.mngr, step, params, self.best)
        if jax.process_index() == 0:
            with open(os.path.join(self.workdir, "best_metrics.json"), "w") as f:
                json.dump(self.best, f, indent=2)

    def close(self) -> None:
        if self.mngr is not None:
            self.mngr.close()


def export_word_vectors(setup: Setup, cfg, params, workdir: str) -> None:
    """WORKDIR/words.txt (word, count) and WORKDIR/vectors.txt (word2vec text format), the
    files `configs/embeddings/classify.py:init=WORKDIR` and gensim read."""
    from tlx import wordvec

    vectors = evaluate.word_vectors(setup, cfg, params)
    data_pipelines.tasks.word_corpus(cfg.data.task_name).write_vocab(
        os.path.join(workdir, "words.txt")
    )
    wordvec.save(vectors, os.path.join(workdir, "vectors.txt"), "word2vec")
    print(f"wrote {len(vectors)} x {vectors.dim} vectors to {workdir}/vectors.txt", flush=True)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains per `cfg`, resuming from `workdir` if it holds checkpoints; returns final metrics."""
    # --- distributed init, data task, checks (nothing is written before they pass) ----------
    maybe_initialize_distributed(cfg)
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # unlocked copy: we add the resolved task
    mesh = partitioning.make_mesh(dict(cfg.mesh))
    config_checks.check_values(cfg, mesh.shape.get("data", 1))
    cfg.data.task_name = resolve_task(cfg)
    word_corpus = data_pipelines.tasks.word_corpus(cfg.data.task_name)
    if word_corpus is not None:  # word2vec / GloVe: the corpus' min-count words
        vocab_size = word_corpus.vocab_size
    else:
        vocab_size = data_pipelines.vocabularies.get_vocabulary(cfg.data.vocab).vocab_size
    if "vocab_size" in cfg.model and cfg.model.vocab_size is None:  # "the data's vocabulary"
        cfg.model.vocab_size = vocab_size
    if "tgt_vocab_size" in cfg.model and cfg.model.tgt_vocab_size is None:  # seq2seq targets
        cfg.model.tgt_vocab_size = data_pipelines.tasks.target_vocab_size(cfg.data.task_name)
    if cfg.model.get("vocab_size") not in (None, vocab_size):
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} but data.vocab={cfg.data.vocab!r} has "
            f"{vocab_size} entries; set --config.model.vocab_size={vocab_size}"
        )
    _apply_epochs(cfg)
    global_batch, total_steps = cfg.train.batch_size, cfg.train.steps
    eval_split = cfg.data.eval_split
    ckpt_dir = os.path.join(workdir, "checkpoints")
    saved_config = os.path.join(workdir, "config.json")
    if checkpoint.has_steps(ckpt_dir) and os.path.exists(saved_config):
        config_checks.check_resume(saved_config, cfg)
    # Every split the run reads, opened and checked now: seconds, not after training.
    data_verify.check_run_data(cfg, ("train", *evaluate.splits_read(cfg, eval_split)))

    # --- model, optimizer, mesh, shardings ---------------------------------------------------
    setup = build(cfg, input_pipeline.example_batch(cfg, global_batch))
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        _write_json_atomic(saved_config, cfg.to_json_best_effort(indent=2))
    print(
        f"process_index={jax.process_index()} process_count={jax.process_count()} "
        f"devices={jax.device_count()} local_devices={jax.local_device_count()} "
        f"mesh={dict(setup.mesh.shape)} task={cfg.data.task_name}",
        flush=True,
    )
    state = setup.init(jax.random.PRNGKey(cfg.seed))

    # --- restore: own checkpoint, else init_from (params) and/or init_vectors, else fresh ----
    mngr = checkpoint.manager(
        ckpt_dir,
        every=cfg.checkpoint.every,
        max_to_keep=cfg.checkpoint.max_to_keep,
        async_save=cfg.checkpoint.async_save,
    )
    num_shards = input_pipeline.data_shards(cfg, global_batch)
    start_example = 0
    resumed = checkpoint.restore_latest(mngr, setup.abstract_state, setup.state_shardings)
    if resumed is not None:
        step, params, opt_state, meta = resumed
        rng = jnp.asarray(np.array(meta["rng"], np.uint32))
        state = TrainState(jnp.asarray(step, jnp.int32), params, opt_state, rng)
        state = jax.device_put(state, setup.state_shardings)
        start_example = meta.get("examples_consumed", meta["batches_consumed"] * global_batch)
        if meta.get("data_shards", num_shards) != num_shards:
            raise ConfigError(
                f"this run's data stream was split into {meta['data_shards']} shards, now into "
                f"{num_shards} (data.num_shards, default one per process): the examples would "
                f"change; set --config.data.num_shards={meta['data_shards']}"
            )
        print(f"resumed from {workdir}/checkpoints step {step}", flush=True)
    elif cfg.transfer.init_from or cfg.transfer.get("init_vectors"):
        params = state.params
        if cfg.transfer.init_from:  # a pretrained run's params (params only)
            params, src_step = checkpoint.load_pretrained(
                cfg.transfer.init_from,
                params,
                setup.state_shardings.params,
                dont_load=cfg.transfer.dont_load,
                ignore=cfg.transfer.ignore,
            )
            print(f"initialised from {cfg.transfer.init_from} (step {src_step})", flush=True)
        if cfg.transfer.get("init_vectors"):  # word vectors (GloVe, word2vec) into one table
            where = cfg.transfer.get("vectors_param", "embed/embedding")
            params, hits, n = checkpoint.load_word_vectors(
                cfg.transfer.init_vectors, cfg.data.vocab, where, params,
                setup.state_shardings.params,
            )  # fmt: skip
            print(f"initialised {where} from {cfg.transfer.init_vectors}: {hits:,} / {n:,} words")
        state = state.replace(
            params=params,
            opt_state=jax.jit(setup.tx.init, out_shardings=setup.state_shardings.opt_state)(params),
        )

    # --- train -------------------------------------------------------------------------------
    log = MetricsLog(workdir, total_steps, start_step=int(state.step))
    best = BestTracker(workdir, evaluate.downstream(cfg.data.task_name))
    batches = input_pipeline.train_batches(cfg, global_batch, start_example)
    tokens_per_step = global_batch * cfg.data.seq_len
    step = int(state.step)
    window, t0, last_eval = [], time.time(), {}
    while step < total_steps:
        batch = partitioning.global_batch(next(batches), setup.batch_sharding)
        state, metrics = setup.train_step(state, batch)
        window.append(metrics)
        step += 1
        start_example += global_batch
        due_log = step % cfg.train.log_every == 0 or step == total_steps
        due_save = step % cfg.checkpoint.every == 0 or step == total_steps
        if due_log or due_save:
            summary = reduce(window)
            if not math.isfinite(summary["loss"]):
                mngr.wait_until_finished()
                raise DivergedError(
                    f"loss is {summary['loss']} at step {step} (window of {len(window)} steps); "
                    f"not saving. Last good checkpoint: step {mngr.latest_step()} in {workdir}"
                )
        if due_log:
            dt = time.time() - t0
            summary["steps_per_sec"] = len(window) / dt
            summary["step_time"] = dt / len(window)
            summary["tokens_per_sec"] = len(window) * tokens_per_step / dt
            log.write(step, summary)
            log.progress(step, summary)
            window, t0 = [], time.time()
        if step % cfg.train.eval_every == 0 or step == total_steps:
            last_eval = evaluate.score(setup, cfg, state.params, global_batch, eval_split)
            log.write(step, last_eval, prefix="eval/")
            log.progress(step, {f"eval/{k}": v for k, v in last_eval.items()})
            best.update(step, state.params, last_eval)
            t0 = time.time()
        if due_save:
            meta = {
                "step": step,
                "batches_consumed": step,
                "examples_consumed": start_example,
                "data_shards": num_shards,
                "rng": np.asarray(jax.device_get(state.rng)).tolist(),
            }
            checkpoint.save(mngr, step, state, meta, force=step == total_steps)
            if os.environ.get("TLX_FAULT_KILL_AFTER_STEP"):
                mngr.wait_until_finished()
                _kill_for_test(step)
    if not last_eval:  # resumed at the final step: still report the final evaluation
        last_eval = evaluate.score(setup, cfg, state.params, global_batch, eval_split)
    if word_corpus is not None and jax.process_index() == 0:
        export_word_vectors(setup, cfg, state.params, workdir)
    mngr.wait_until_finished()
    mngr.close()
    log.close()
    best.close()
    final = {f"eval/{k}": v for k, v in last_eval.items()}
    if best.best is not None:
        final.update({f"best/{k}": v for k, v in best.best["metrics"].items()})
        final["best/step"] = best.best["step"]
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": step, **final}, f, indent=2)
    return final


def quiet_logs() -> None:
    """Library INFO logs (Orbax, clu, SeqIO) drown the progress line; --verbosity=0 restores."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


@cli_boundary
def main(argv) -> None:
    del argv
    from absl import flags

    quiet_logs()
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file, FILE.py[:ARG].", lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, TensorBoard).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
