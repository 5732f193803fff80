"""What the downstream-table launchers (finetune_table.py, embedding_table.py,
feature_table.py) share. No absl flags here, so all can import it: the task list, capping a
run's epochs to a step budget, running and recording one cell, and the markdown table of best
dev scores."""

import json
import math
import os
import shutil
import time

import data_pipelines
from tlx import train

TASKS = ("sst2", "trec", "mrpc", "rte", "conll2003_ner", "wnut17_ner", "ud_ewt_upos")


def primary_metric(task: str) -> str:
    return data_pipelines.downstream_info(task).primary_metric


def cap_epochs(cfg, epochs: float, max_steps: int, batch: int) -> None:
    """Fewer epochs when `max_steps` (> 0) steps of `batch` examples cover less than `epochs`
    of the task's train split; a run shorter than an epoch evaluates halfway and at the end."""
    if not max_steps:
        return
    cfg.data.task_name = train.resolve_task(cfg)
    n = train.input_pipeline.split_size(cfg, "train")
    capped = min(epochs, max_steps * batch / n)
    if capped < epochs:
        cfg.train.epochs = capped
        if capped < 1:
            cfg.train.eval_every = max(1, math.ceil(capped * n / batch / 2))


def run_cell(results: dict, path: str, key: str, cfg, run_dir: str, task: str, settings: dict,
             label: str, keep_checkpoints: bool = False) -> None:  # fmt: skip
    """Trains one cell (an ordinary tlx.train run), records its final metrics, wall time and
    settings as results[key], rewrites `path` (results.json), deletes the run's resume
    checkpoint unless asked to keep it (best dev params stay in RUN/best), and prints the table."""
    start = time.time()
    final = train.train_and_evaluate(cfg, run_dir)
    results[key] = {
        "seconds": time.time() - start,
        **settings,
        "epochs": cfg.train.epochs,
        "batch": cfg.train.batch_size,
        "lr": cfg.optim.lr,
        "seq_len": cfg.data.seq_len,
        "metric": primary_metric(task),
        **final,
    }
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    if not keep_checkpoints:
        shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
    print(markdown_table(results, label), flush=True)


def markdown_table(results: dict, label: str = "row") -> str:
    """Rows: the `ROW` of each `ROW/TASK` key; a column per task (best dev primary metric);
    the row's total wall time."""
    tasks = [t for t in TASKS if any(k.endswith("/" + t) for k in results)]
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
            cells.append(f"{res['best/' + primary_metric(t)]:.1f}")
            secs += res["seconds"]
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {secs / 60:.1f} min |")
    return "\n".join(lines)
