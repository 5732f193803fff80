r"""Scores a run's checkpoint on a task's split, from the command line.

  python -m tlx.evaluate --workdir=runs/bert_mini_mrpc --task=mrpc [--split=test] \
      [--checkpoint=best|latest|STEP]

writes `WORKDIR/eval_TASK.json`. The model comes from the run's `config.json`; the params from
its best-dev checkpoint (`WORKDIR/best`, kept by the finetuning loop) or the latest one. Any
checkpoint can be scored on any task whose kind and label count fit its head, e.g. an SST-2
classifier on the SST-2 test split, or a CoNLL tagger on another IOB2 NER set.

The run is scored by its own `eval` evaluator (tlx.evaluators, from the run's `c.evals`;
for a config.json from before them, the evaluation tlx ran then): downstream tasks by their
own metrics (seqio metric_fns: accuracy, F1, span F1 with seqeval semantics, as fractions)
with the objective's loss alongside, pretraining tasks by the objective's metrics, and
`--task=word_eval` by the run's word-vector evaluator.
"""

import json
import os

import jax
import ml_collections

import data_pipelines
from tlx import checkpoint, evaluators, input_pipeline, models, objectives, steps
from tlx.data import verify as data_verify
from tlx.errors import ConfigError, cli_boundary
from tlx.metrics import quiet_logs

WORD_EVAL = "word_eval"  # --task: the run's word vectors on the intrinsic benchmarks


def _run_config(workdir: str, task: str | None) -> tuple[ml_collections.ConfigDict, dict]:
    """The run's config with `task` in place of its own, and the evaluator (its name and spec,
    tlx.evaluators) to score it with: the run's `eval`, its word_vectors one for word_eval, a
    downstream one for another task."""
    cfg = steps.load_run_config(workdir)
    specs = evaluators.specs(cfg)
    if task == WORD_EVAL:
        found = [n for n, s in specs.items() if s["type"] == "word_vectors"]
        if not found:
            raise ConfigError(
                f"--task={WORD_EVAL} scores word-vector runs (an evals entry of type "
                f"word_vectors); the run in {workdir} trains objective "
                f"{objectives.name_of(cfg.objective)!r}"
            )
        return cfg, {"name": found[0], **specs[found[0]]}
    if task and task != cfg.data.task:
        try:
            info = data_pipelines.downstream_info(task)
        except ValueError:
            raise ConfigError(f"--task={task} is not a downstream task") from None
        kind, classes = models.head_kind(cfg.model), models.num_classes(cfg.model)
        if (
            kind is None
            or (info.kind == "tagging") != (kind == "tagging")
            or (info.num_classes != classes)
        ):
            head = {None: "no", "tagging": "a tagging"}.get(kind, "a sentence/pair")
            raise ConfigError(
                f"the run in {workdir} has {head} head with {classes} classes "
                f"(trained on {cfg.data.task}); {task} is a {info.kind} task with "
                f"{info.num_classes} labels"
            )
        cfg.data.task = task
        return cfg, {"name": "eval", "type": "downstream"}
    if "eval" not in specs:
        raise ConfigError(f"the run in {workdir} has no evaluator named 'eval': {sorted(specs)}")
    return cfg, {"name": "eval", **specs["eval"]}


def evaluate_run(
    workdir: str,
    task: str | None = None,
    split: str = "validation",
    checkpoint_name: str = "best",
    eval_steps: int = -1,
) -> dict:
    """Scores a run's checkpoint on `task` (default: its own) and writes eval_TASK.json.
    eval_steps=-1 scores the whole split."""
    cfg, spec = _run_config(workdir, task)
    name, kind = spec.pop("name"), spec.pop("type")
    spec.pop("task", None)
    spec.update(split=split, steps=eval_steps)
    cfg.train.eval_steps = eval_steps
    cfg.data.task_name = steps.resolve_task(cfg)
    data_verify.check_run_data(cfg, evaluators.TYPES[kind].splits(cfg, spec))
    global_batch = cfg.train.batch_size
    setup = steps.build(cfg, input_pipeline.example_batch(cfg, global_batch))
    best_dir = os.path.join(workdir, checkpoint.BEST_DIR)
    if checkpoint_name == "best" and os.path.isdir(best_dir) and os.listdir(best_dir):
        directory, step = best_dir, None
    else:
        directory = checkpoint.run_checkpoints(cfg, workdir)  # a path or URL (checkpoint.directory)
        step = checkpoint.parse_choice(checkpoint_name)
    step, params = steps.restore_params(setup, cfg, directory, step)
    evaluator = evaluators.TYPES[kind](name, setup, cfg, workdir=workdir, **spec)
    metrics = evaluator.run(params)
    num_examples = metrics.pop("num_examples", None)
    result = {
        "num_examples": num_examples,
        "task": task or cfg.data.task,
        "split": split,
        "checkpoint": os.path.join(directory, str(step)),  # also joins a URL
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
