r"""Scoring: a model's dev/test metrics on a task, in the training loop and from the CLI.

  python -m tlx.evaluate --workdir=runs/bert_mini_mrpc --task=mrpc [--split=test] \
      [--checkpoint=best|latest|STEP]

writes `WORKDIR/eval_TASK.json`. The model comes from the run's `config.json`; the params from
its best-dev checkpoint (`WORKDIR/best`, kept by the finetuning loop) or the latest one. Any
checkpoint can be scored on any task whose kind and label count fit its head, e.g. an SST-2
classifier on the SST-2 test split, or a CoNLL tagger on another IOB2 NER set.

Downstream metrics are the task's own (seqio metric_fns: accuracy, F1, span F1 with seqeval
semantics), computed on the host from the gathered predictions, in percent; the objective's
loss is reported alongside. Pretraining tasks report the objective's metrics.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import data_pipelines
from data_pipelines import tagging
from tlx import input_pipeline, partitioning
from tlx.data import verify as data_verify
from tlx.errors import ConfigError, cli_boundary
from tlx.metrics import reduce

# Batch fields the host needs to score predictions, per task kind.
TARGETS = {
    "sentence": ("label",),
    "pair": ("label",),
    "tagging": ("label_weights", "word_labels"),
}


def downstream(task_name: str):
    try:
        return data_pipelines.downstream_info(task_name)
    except ValueError:
        return None


def make_predict_step(model, objective, kind: str):
    """(params, batch) -> the objective's metrics, argmax predictions and the targets needed to
    score them (global), from one forward pass."""

    def predict(params, batch):
        outputs, _ = model.apply({"params": params}, batch, train=False)
        out = {k: batch[k] for k in (*TARGETS[kind], "example_weight")}
        out["prediction"] = jnp.argmax(outputs["logits"], -1).astype(jnp.int32)
        out["metrics"] = objective(outputs, batch)[1]
        return out

    return predict


def task_metrics(info, collected: list[dict]) -> dict[str, float]:
    """The task's metric_fn over gathered prediction batches (padding examples dropped)."""
    batch = {k: np.concatenate([c[k] for c in collected]) for k in collected[0]}
    keep = batch["example_weight"] > 0
    if info.kind in ("sentence", "pair"):
        return info.metric_fn(batch["label"][keep].tolist(), batch["prediction"][keep].tolist())
    names = info.labels
    targets, predictions = [], []
    for pred, weights, words in zip(
        batch["prediction"][keep], batch["label_weights"][keep], batch["word_labels"][keep]
    ):
        gold, guess = tagging.words_from_pieces(pred, weights, words, tagging.outside_id(names))
        targets.append([names[i] for i in gold])
        predictions.append([names[i] for i in guess])
    return info.metric_fn(targets, predictions)


# Objectives whose models are word-vector tables: they are scored on word_eval, not on a split.
WORD_OBJECTIVES = ("sgns", "glove")


def splits_read(cfg, split: str) -> tuple[str, ...]:
    """The task splits `score` reads to evaluate on `split` (none for word-vector runs)."""
    return () if cfg.objective in WORD_OBJECTIVES else (split,)


def word_vectors(setup, cfg, params):
    """The run's word vectors (tlx.wordvec.WordVectors): the model's exported table, with the
    corpus vocabulary of its task."""
    from tlx import wordvec

    table = setup.model.apply({"params": params}, method="word_vectors")
    corpus = data_pipelines.tasks.word_corpus(cfg.data.task_name)
    return wordvec.WordVectors(list(corpus.words), np.asarray(jax.device_get(table), np.float32))


def score(setup, cfg, params, global_batch: int, split: str) -> dict[str, float]:
    """Objective metrics (and, for downstream tasks, the task's metrics) over `split`.
    A mixture is scored member by member: TASK/METRIC, and `average` of the primary metrics.
    Word-vector runs are scored on WordSim-353, SimLex-999 and the Google analogies."""
    if cfg.objective in WORD_OBJECTIVES:
        from tlx import word_eval

        return word_eval.evaluate(word_vectors(setup, cfg, params), cfg.data.data_dir or None)
    members = data_pipelines.tasks.mixture_members(cfg.data.task_name)
    if members is not None:
        out, primaries, losses = {}, [], []
        for member, base in members:
            sub = ml_collections.ConfigDict(cfg.to_dict())
            sub.data.task_name = member
            metrics = score(setup, sub, params, global_batch, split)
            out.update({f"{base}/{k}": v for k, v in metrics.items()})
            primaries.append(metrics[data_pipelines.downstream_info(base).primary_metric])
            losses.append(metrics["loss"])
        return {"loss": float(np.mean(losses)), "average": float(np.mean(primaries)), **out}
    info = downstream(cfg.data.task_name)
    batches, steps = input_pipeline.eval_batches(cfg, global_batch, split)
    window, collected = [], []
    for _, local in zip(range(steps), batches, strict=False):
        batch = partitioning.global_batch(local, setup.batch_sharding)
        if info is None:
            window.append(setup.eval_step(params, batch))
            continue
        out = jax.device_get(setup.predict_step(params, batch))
        window.append(out.pop("metrics"))
        collected.append(out)
    metrics = reduce(window)
    if info is None:
        return metrics
    n = int(sum(float(c["example_weight"].sum()) for c in collected))
    return {"loss": metrics["loss"], **task_metrics(info, collected), "num_examples": n}


def _load_run_config(workdir: str, task: str | None) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a tlx run directory")
    with open(path) as f:
        try:
            cfg = ml_collections.ConfigDict(json.load(f))
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path} is not valid JSON ({e}); is the run directory intact?"
            ) from e
    if task == "word_eval":
        if cfg.objective not in WORD_OBJECTIVES:
            raise ConfigError(
                f"--task=word_eval scores word-vector runs ({WORD_OBJECTIVES}); the run in "
                f"{workdir} trains objective {cfg.objective!r}"
            )
    elif task and task != cfg.data.task:
        info, model = downstream(task), cfg.model
        if info is None:
            raise ConfigError(f"--task={task} is not a downstream task")
        kind = "tagging" if model.name.endswith("tagger") else "sentence/pair"
        if (info.kind == "tagging") != (kind == "tagging") or info.num_classes != model.get(
            "num_classes"
        ):
            raise ConfigError(
                f"the run in {workdir} has a {kind} head with {model.get('num_classes')} classes "
                f"(trained on {cfg.data.task}); {task} is a {info.kind} task with "
                f"{info.num_classes} labels"
            )
        cfg.data.task = task
    return cfg


def evaluate_run(
    workdir: str,
    task: str | None = None,
    split: str = "validation",
    checkpoint_name: str = "best",
    eval_steps: int = -1,
) -> dict:
    """Scores a run's checkpoint on `task` (default: its own) and writes eval_TASK.json.
    eval_steps=-1 scores the whole split."""
    from tlx import checkpoint, train  # train builds the model; it imports this module

    cfg = _load_run_config(workdir, task)
    cfg.train.eval_steps = eval_steps
    cfg.data.task_name = train.resolve_task(cfg)
    data_verify.check_run_data(cfg, splits_read(cfg, split))
    global_batch = cfg.train.batch_size
    setup = train.build(cfg, input_pipeline.example_batch(cfg, global_batch))
    best_dir = os.path.join(workdir, checkpoint.BEST_DIR)
    if checkpoint_name == "best" and os.path.isdir(best_dir) and os.listdir(best_dir):
        directory, step = best_dir, None
    else:
        directory = os.path.join(workdir, "checkpoints")
        step = checkpoint.parse_choice(checkpoint_name)
    step, params = checkpoint.restore_params(
        directory, setup.abstract_state.params, setup.state_shardings.params, step
    )
    metrics = score(setup, cfg, params, global_batch, split)
    num_examples = metrics.pop("num_examples", None)
    result = {
        "num_examples": num_examples,
        "task": task or cfg.data.task,
        "split": split,
        "checkpoint": os.path.join(directory, str(step)),
        "step": step,
        "metrics": metrics,
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, f"eval_{task or cfg.data.task}.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


@cli_boundary
def main(argv) -> None:
    del argv
    from absl import flags

    from tlx.train import quiet_logs

    quiet_logs()
    f = flags.FLAGS
    result = evaluate_run(f.workdir, f.task, f.split, f.checkpoint)
    shown = " ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items())
    print(f"{result['task']} {result['split']} @ {result['checkpoint']}: {shown}", flush=True)


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "A tlx run directory (config.json + checkpoints).")
    flags.DEFINE_string("task", None, "Task to score on (default: the run's own task).")
    flags.DEFINE_string("split", "validation", "Split to score.")
    flags.DEFINE_string("checkpoint", "best", "best (best dev, else latest), latest, or a step.")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
