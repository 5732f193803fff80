"""What the downstream-table launchers (finetune_table.py, embedding_table.py,
feature_table.py) share. No absl flags here, so all can import it: the task list (the task
registry's, `python -m tlx.tasks list`), capping a run's epochs to a step budget, running and
recording one cell, and the markdown table of best dev scores.

Units: the downstream metrics (the tasks' metric_fns: accuracy, F1, span F1, their mixture
`average`) are fractions in [0, 1], in results.json as everywhere else in tlx; the table shows
them x 100, in percent, as the README's tables do. Each recorded cell says which it holds in
`"units"`: "fraction" for every cell recorded now (`UNITS`); a cell with no `"units"` was
recorded before the metric_fns returned fractions, when they returned percent, and is read as
"percent" (shown as recorded). Mixing both in one results.json is fine; the raw numbers in such
a file are only comparable through their cell's `"units"`."""

import json
import math
import os
import shutil
import time

import data_pipelines
from tlx import input_pipeline, steps, train

# The default columns: every downstream task read from $TLX_DATA_DIR, in registry order. A
# table also takes the `*_tfds` tasks (network needed) when asked for them.
TASKS = data_pipelines.downstream_tasks()
KNOWN = data_pipelines.downstream_tasks(network=True)

# What results.json cells record the task metrics in, and what the table multiplies by to show
# percent. A cell without "units" predates the field: its metrics were recorded in percent.
UNITS = "fraction"
LEGACY_UNITS = "percent"
TO_PERCENT = {"fraction": 100.0, "percent": 1.0}


def check_tasks(tasks, error: type[Exception] = ValueError) -> None:
    """Raises `error` naming the tasks that are not registered downstream tasks, and the known."""
    unknown = [t for t in tasks if t not in KNOWN]
    if unknown:
        raise error(f"unknown task(s) {unknown}; known: {', '.join(KNOWN)}")


def primary_metric(task: str) -> str:
    return data_pipelines.downstream_info(task).primary_metric


def cell(final: dict, **settings) -> dict:
    """A results.json cell: `settings` (wall time, lr, ...), the run's final metrics
    (tlx.train.train_and_evaluate's; task metrics are fractions) and their `"units"`."""
    return {**settings, **final, "units": UNITS}


def shown_percent(res: dict, metric: str) -> float:
    """A cell's best dev `metric` in percent, by the cell's `"units"` (none: legacy percent)."""
    units = res.get("units", LEGACY_UNITS)
    if units not in TO_PERCENT:
        raise ValueError(f"cell units {units!r} unknown; expected one of {sorted(TO_PERCENT)}")
    return res["best/" + metric] * TO_PERCENT[units]


def cap_epochs(cfg, epochs: float, max_steps: int, batch: int) -> None:
    """Fewer epochs when `max_steps` (> 0) steps of `batch` examples cover less than `epochs`
    of the task's train split; a run shorter than an epoch evaluates halfway and at the end.
    The rule it caps: `train.steps` > 0 wins, `train.steps` <= 0 (the recipe configs) means
    steps from `train.epochs`; so a config with a step budget has that budget capped instead."""
    if not max_steps:
        return
    if cfg.train.steps > 0:
        cfg.train.steps = min(cfg.train.steps, max_steps)
        return
    cfg.data.task_name = steps.resolve_task(cfg)
    n = input_pipeline.split_size(cfg, "train")
    capped = min(epochs, max_steps * batch / n)
    if capped < epochs:
        cfg.train.epochs = capped
        if capped < 1:
            cfg.train.eval_every = max(1, math.ceil(capped * n / batch / 2))


def run_cell(results: dict, path: str, key: str, cfg, run_dir: str, task: str, settings: dict,
             label: str, keep_checkpoints: bool = False) -> None:  # fmt: skip
    """Trains one cell (an ordinary tlx.train run), records its final metrics, wall time and
    settings as results[key] (`cell`), rewrites `path` (results.json), deletes the run's resume
    checkpoint unless asked to keep it (best dev params stay in RUN/best), and prints the table."""
    start = time.time()
    final = train.train_and_evaluate(cfg, run_dir)
    results[key] = cell(
        final,
        seconds=time.time() - start,
        **settings,
        epochs=cfg.train.epochs,
        batch=cfg.train.batch_size,
        lr=cfg.optim.lr,
        seq_len=cfg.data.seq_len,
        metric=primary_metric(task),
    )
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    if not keep_checkpoints:
        shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
    print(markdown_table(results, label), flush=True)


def markdown_table(results: dict, label: str = "row") -> str:
    """Rows: the `ROW` of each `ROW/TASK` key; a column per task (best dev primary metric, shown
    in percent whatever the cell's units: `shown_percent`), in registry order; the row's total
    wall time. A task the registry does not know, or a cell of unknown units, raises."""
    tasks = list(dict.fromkeys(k.rsplit("/", 1)[-1] for k in results))
    check_tasks(tasks)
    tasks.sort(key=KNOWN.index)
    rows = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in results))
    head = f"| {label} | " + " | ".join(f"{t} ({primary_metric(t)})" for t in tasks)
    lines = [head + " | time |", "|---" * (len(tasks) + 2) + "|"]
    for r in rows:
        cells, secs = [], 0.0
        for t in tasks:
            res = results.get(f"{r}/{t}")
            if res is None:
                cells.append("-")
                continue
            cells.append(f"{shown_percent(res, primary_metric(t)):.1f}")
            secs += res["seconds"]
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {secs / 60:.1f} min |")
    return "\n".join(lines)
