r"""The feature-based transfer table: downstream tasks x {scratch, GloVe, GloVe+CoVe, ELMo last
layer, ELMo scalar mix}, each an ordinary `tlx.train` run scored on dev.

  python launch/feature_table.py --cove=runs/cove --elmo=runs/elmo --workdir=runs/feature_table \
      [--tasks=sst2,trec,mrpc,conll2003_ner] [--rows=scratch,glove,glove+cove,elmo_last,elmo_all]
      [--epochs=3 --max_steps=0 --batch=32 --seq_len=0]

Every row feeds the same task model (a BiLSTM, max-pooled for sentences, per token for tagging;
tlx.models.contextual) and differs only in its frozen input features: configs/cove/finetune.py
(features scratch | glove | glove+cove) and configs/elmo/finetune.py (mix last | all). A cell is
the run's best dev evaluation of the task's primary metric, in percent. Runs go to
WORKDIR/ROW/TASK; WORKDIR/results.json keeps every run's metrics (fractions, with the cell's
"units"; see table_common), wall time and settings, and finished cells are
skipped on a rerun. Resume checkpoints are deleted after each run (best dev params stay).
"""

import json
import os

import table_common
from absl import app, flags

from configs.cove import finetune as cove_finetune
from configs.elmo import finetune as elmo_finetune
from tlx import metrics

TASKS = table_common.TASKS
ROWS = ("scratch", "glove", "glove+cove", "elmo_last", "elmo_all")
flags.DEFINE_list("tasks", ["sst2", "trec", "mrpc", "conll2003_ner"], f"Tasks, of {TASKS}.")
flags.DEFINE_list("rows", list(ROWS), f"Rows, of {ROWS}.")
flags.DEFINE_string("cove", "runs/cove", "A configs/cove/translate.py run (glove+cove row).")
flags.DEFINE_string("elmo", "runs/elmo", "A configs/elmo/pretrain.py run (elmo rows).")
flags.DEFINE_string("workdir", "runs/feature_table", "Where the runs and results.json go.")
flags.DEFINE_float("epochs", 3.0, "Epochs per run.")
flags.DEFINE_integer("max_steps", 0, "Cap on steps per run (0: none); caps the epochs.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seq_len", 0, "Words per row (0: each task's default length).")
FLAGS = flags.FLAGS


def _config(task: str, row: str):
    arg = f"task={task},batch={FLAGS.batch},epochs={FLAGS.epochs},lr={FLAGS.lr}"
    arg += f",seq_len={FLAGS.seq_len}"
    if row.startswith("elmo_"):
        cfg = elmo_finetune.get_config(f"{arg},mix={row.removeprefix('elmo_')},init={FLAGS.elmo}")
    else:
        cfg = cove_finetune.get_config(f"{arg},features={row},init={FLAGS.cove}")
    cfg.unlock()
    table_common.cap_epochs(cfg, FLAGS.epochs, FLAGS.max_steps, FLAGS.batch)
    return cfg


def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    table_common.check_tasks(FLAGS.tasks, app.UsageError)
    unknown = sorted(set(FLAGS.rows) - set(ROWS))
    if unknown:
        raise app.UsageError(f"--rows: unknown {unknown}; expected some of {ROWS}")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    path = os.path.join(FLAGS.workdir, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for row in FLAGS.rows:
        for task in FLAGS.tasks:
            key = f"{row}/{task}"
            if key in results:
                continue
            cfg = _config(task, row)
            run_dir = os.path.join(FLAGS.workdir, row, task)
            settings = {"init_from": cfg.transfer.init_from}
            table_common.run_cell(results, path, key, cfg, run_dir, task, settings, "features")


if __name__ == "__main__":
    app.run(main)
