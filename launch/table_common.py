"""What the downstream-table launchers (finetune_table.py, embedding_table.py) share. No absl
flags here, so both can import it: the task list, capping a run's epochs to a step budget, and
the markdown table of best dev scores."""

import math

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
