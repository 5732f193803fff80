r"""The one training loop: pretraining and finetuning for every paradigm.

  python -m tlx.train --config=configs/bert/pretrain.py:size=mini --workdir=runs/bert_mini \
      [--config.train.steps=1000 ...]

Sections, top to bottom: distributed init, data task and checks, model + optimizer + shardings
(tlx.steps.build), restore (tlx.checkpoint.restore_or_init), evaluators (tlx.evaluators, from
`c.evals`), then train steps with logging, evaluation, the best checkpoint and saves. The loop
asks nothing about the paradigm: models, objectives, optimizers, tasks and evaluators do.
"""

import functools
import json
import math
import os
import time

import jax
import ml_collections
import numpy as np

from tlx import best as best_lib
from tlx import (
    checkpoint,
    config_checks,
    distributed,
    evaluators,
    flops,
    input_pipeline,
    models,
    partitioning,
    precision,
    preemption,
    steps,
)
from tlx.data import verify as data_verify
from tlx.errors import ConfigError, DivergedError, Preempted, cli_boundary
from tlx.metrics import (
    MetricsLog,
    ProfileWindow,
    Throughput,
    headline,
    quiet_logs,
    real_tokens,
    reduce,
)


def _write_json_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _apply_epochs(cfg: ml_collections.ConfigDict) -> None:
    """Step count: `train.steps` > 0 is the step count (a cap on an epochs recipe, e.g.
    `--config.train.steps=N`, just works); `train.steps` <= 0 takes it from `train.epochs`
    (the BERT finetuning recipe: epochs x train examples / batch). `train.eval_every` <= 0
    means once per epoch."""
    epochs = cfg.train.get("epochs", 0)
    if cfg.train.steps <= 0 and epochs <= 0:
        raise ConfigError(
            f"train.steps={cfg.train.steps} and train.epochs={epochs}: set one of them > 0"
        )
    if cfg.train.eval_every > 0 and cfg.train.steps > 0:
        return
    if epochs <= 0:
        raise ConfigError(
            f"train.eval_every={cfg.train.eval_every} (<= 0: once per epoch) needs train.epochs > 0"
        )
    config_checks.check_positive(cfg, "train.batch_size")
    n = input_pipeline.split_size(cfg, "train")
    per_epoch = max(1, math.ceil(n / cfg.train.batch_size))
    if cfg.train.steps <= 0:
        cfg.train.steps = max(1, round(epochs * n / cfg.train.batch_size))
    if cfg.train.eval_every <= 0:
        cfg.train.eval_every = per_epoch
    print(
        f"{cfg.data.task}: {n} training examples; {cfg.train.steps} steps of "
        f"{cfg.train.batch_size} ({cfg.train.steps * cfg.train.batch_size / n:.3g} epochs); "
        f"evaluating every {cfg.train.eval_every} steps",
        flush=True,
    )


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains per `cfg`, resuming from `workdir` if it holds checkpoints; returns final metrics."""
    # --- distributed init, data task, checks (nothing is written before they pass) ----------
    distributed.initialize(cfg)  # launch/multiprocess.sh, a SLURM step, a TPU pod: c.distributed
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # unlocked copy: we add the resolved task
    mesh = partitioning.mesh_from_config(cfg)
    config_checks.check_values(cfg, partitioning.data_parallel_size(mesh))
    cfg.data.task_name = steps.resolve_task(cfg)
    steps.fill_model_dims(cfg)  # model keys left None: vocabulary, target vocabulary, classes
    _apply_epochs(cfg)
    global_batch, total_steps = cfg.train.batch_size, cfg.train.steps
    profile = ProfileWindow(cfg.train.get("profile_steps", ""), os.path.join(workdir, "profile"))
    if "://" in workdir:
        raise ConfigError(
            f"--workdir={workdir}: the workdir (metrics, TensorBoard, best/) is a local path; "
            f"put the checkpoints on a URL: --config.checkpoint.directory={workdir}/checkpoints"
        )
    ckpt_dir = checkpoint.run_checkpoints(cfg, workdir)  # an epath path or URL (gs://...)
    saved_config = os.path.join(workdir, "config.json")
    # Checkpoints kept elsewhere (checkpoint.directory) get a copy of the config beside them, so
    # a resume from another machine's workdir (a recreated TPU slice) is still checked.
    elsewhere = checkpoint.path(ckpt_dir) / "config.json" if cfg.checkpoint.directory else None
    if checkpoint.has_steps(ckpt_dir):
        found = [c for c in (saved_config, elsewhere) if c and checkpoint.path(c).exists()]
        if found:
            config_checks.check_resume(str(found[0]), cfg)
    # Every split the run reads, opened and checked now: seconds, not after training.
    data_verify.check_run_data(cfg, ("train", *evaluators.splits_read(cfg)))  # checks c.evals

    # --- model, optimizer, mesh, shardings ---------------------------------------------------
    example = input_pipeline.example_batch(cfg, global_batch)
    setup = steps.build(cfg, example, mesh=mesh)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        _write_json_atomic(saved_config, cfg.to_json_best_effort(indent=2))
        if elsewhere is not None:
            elsewhere.parent.mkdir(parents=True, exist_ok=True)
            elsewhere.write_text(cfg.to_json_best_effort(indent=2))
    print(
        f"process_index={jax.process_index()} process_count={jax.process_count()} "
        f"devices={jax.device_count()} local_devices={jax.local_device_count()} "
        f"mesh={dict(setup.mesh.shape)} task={cfg.data.task_name}",
        flush=True,
    )

    # --- restore (checkpoint.restore_or_init: the run's own, else transfer.*, else fresh) -----
    mngr = checkpoint.manager(
        ckpt_dir,
        every=cfg.checkpoint.every,
        max_to_keep=cfg.checkpoint.max_to_keep,
        async_save=cfg.checkpoint.async_save,
    )
    data = input_pipeline.data_fingerprint(cfg)
    state, meta = checkpoint.restore_or_init(
        mngr,
        setup.init(jax.random.PRNGKey(cfg.seed)),
        setup.state_shardings,
        cfg.transfer,
        vocab=cfg.data.vocab,
        rename=functools.partial(models.migrate_paths, cfg.model.name),
        reinit=jax.jit(setup.tx.init, out_shardings=setup.state_shardings.opt_state),
    )
    start_example = 0
    if meta is not None:
        start_example = meta.get("examples_consumed", meta["batches_consumed"] * global_batch)
        config_checks.check_data(meta.get("data"), data, ckpt_dir)

    # --- evaluators, logs, the best checkpoint -----------------------------------------------
    evals = evaluators.build(setup, cfg, workdir)
    best = best_lib.BestTracker(workdir, cfg)
    log = MetricsLog(workdir, total_steps, start_step=int(state.step))

    def evaluate(step: int, when: str) -> dict[str, dict[str, float]]:
        results = {n: e.run(state.params) for n, e in evals.items() if e.when == when}
        for name, metrics in results.items():
            log.write(step, metrics, prefix=f"{name}/")
            shown = headline(metrics, evals[name].shown)
            log.progress(step, {f"{name}/{k}": v for k, v in shown.items()})
        return results

    # --- train ------------------------------------------------------------------------------
    # The step never waits on the host: batches are read, counted and placed on device ahead
    # of it (input_pipeline.Prefetch), and device values are fetched only at log/save steps.
    batches = input_pipeline.train_batches(cfg, global_batch, start_example)
    place = lambda b: (partitioning.global_batch(b, setup.batch_sharding), real_tokens(b))
    speed = Throughput(cfg, flops.train_flops_per_example(cfg, example), global_batch)
    step = int(state.step)
    window, tokens, t0, last = [], 0, time.time(), {}
    feed = input_pipeline.Prefetch(batches, place, cfg.train.get("prefetch", 2), total_steps - step)
    with feed, profile, preemption.Watch(step) as preempt:  # all three stop on any exit
        for batch, real in feed:
            profile.before(step + 1)
            state, metrics = setup.train_step(state, batch)
            window.append(metrics)
            step += 1
            profile.after(step, state)
            tokens = None if real is None or tokens is None else tokens + real
            start_example += global_batch
            stop = preempt.reached(step)  # every step, on every process: they agree on it
            due_log = step % cfg.train.log_every == 0 or step == total_steps or stop
            due_save = step % cfg.checkpoint.every == 0 or step == total_steps or stop
            if due_log or due_save:
                summary = reduce(window)  # the one device -> host fetch, for the whole window
                if not math.isfinite(summary["loss"]):
                    mngr.wait_until_finished()
                    raise DivergedError(
                        f"loss is {summary['loss']} at step {step} (window of {len(window)} "
                        f"steps); not saving. Last good checkpoint: step {mngr.latest_step()} "
                        f"in {workdir}"
                    )
            if due_log:
                summary["lr"] = float(metrics["lr"])  # the last step's rate, not the window's
                summary.update(speed.summary(len(window), time.time() - t0, tokens))
                log.write(step, summary)
                log.progress(step, headline(summary))
                window, tokens, t0 = [], 0, time.time()
            if step % cfg.train.eval_every == 0 or step == total_steps:
                last = evaluate(step, "eval")
                best.update(step, state.params, last)
                t0 = time.time()
            if due_save:
                meta = {
                    "step": step,
                    "batches_consumed": step,
                    "examples_consumed": start_example,
                    "data": data,  # the stream continues from (task, seed, examples_consumed)
                    "rng": np.asarray(jax.device_get(state.rng)).tolist(),
                    "precision": precision.describe(cfg.model),
                }
                checkpoint.save(mngr, step, state, meta, force=step == total_steps or stop)
            if stop:
                mngr.wait_until_finished()
                mngr.close()
                log.close()
                best.close()
                print(f"preempted at step {step}; checkpoint saved", flush=True)
                raise Preempted(step)
    if not last:  # resumed at the final step: still report the final evaluation
        last = evaluate(step, "eval")
    last.update(evaluate(step, "end"))  # exports and once-per-run evaluations
    mngr.wait_until_finished()
    mngr.close()
    log.close()
    best.close()
    final = {f"{name}/{k}": v for name, metrics in last.items() for k, v in metrics.items()}
    if best.best is not None:
        final.update({f"best/{k}": v for k, v in best.best["metrics"].items()})
        final["best/step"] = best.best["step"]
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": step, **final}, f, indent=2)
    return final


@cli_boundary
def main(argv) -> None:
    del argv
    from absl import flags

    quiet_logs()
    preemption.listen()  # a SIGTERM during setup is kept for the loop, not lost
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
