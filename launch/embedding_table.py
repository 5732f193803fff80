r"""The embedding-layer transfer table: every task x word-vector source x {scratch, frozen,
finetune}, each an ordinary `tlx.train` run of configs/embeddings/classify.py scored on dev.

  python launch/embedding_table.py --inits=glove6b,runs/word2vec,runs/glove \
      --workdir=runs/emb_table [--tasks=sst2,trec,conll2003_ner] [--modes=scratch,frozen,finetune]
      [--epochs=5 --max_steps=0 --encoder=]

Rows are `INIT MODE` (INIT: glove6b, or the basename of a tlx word2vec / GloVe run dir), columns
the tasks; a cell is the run's best dev evaluation of the task's primary metric (accuracy, span
F1 for NER) in percent, evaluated every epoch (twice when --max_steps makes a run shorter than
an epoch); results.json records the metrics as fractions, with the cell's "units" (see
table_common).
`scratch` uses INIT's vocabulary and dimension with random vectors, so each row triple differs
only in the embedding layer's init and freezing. Runs go to WORKDIR/INIT/MODE/TASK;
WORKDIR/results.json holds every run's metrics, wall time and settings, and finished cells are
skipped when the table is rerun. Each run's resume checkpoint (params + Adam state: ~240 MB for
a finetuned GloVe 6B table) is deleted once the run is done unless --keep_checkpoints; the best
dev params stay in RUN/best for `python -m tlx.evaluate`.
"""

import json
import os

import table_common
from absl import app, flags

from configs.embeddings import classify
from tlx import metrics

TASKS = table_common.TASKS
flags.DEFINE_list("tasks", ["sst2", "trec", "conll2003_ner"], f"Tasks (columns), of {TASKS}.")
flags.DEFINE_list("inits", ["glove6b"], "Word vectors: glove6b and/or tlx word2vec/GloVe run dirs.")
flags.DEFINE_list("modes", list(classify.MODES), "Rows per init: scratch, frozen, finetune.")
flags.DEFINE_string("workdir", "runs/emb_table", "Where the runs and results.json go.")
flags.DEFINE_string("encoder", "", "bag | cnn | bilstm ('' = cnn for sentences, bilstm tagging).")
flags.DEFINE_float("epochs", 5.0, "Epochs per run.")
flags.DEFINE_integer("max_steps", 0, "Cap on steps per run (0: none); caps the epochs.")
flags.DEFINE_integer("batch", 50, "Batch size.")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
flags.DEFINE_bool("keep_checkpoints", False, "Keep each run's resume checkpoint.")
FLAGS = flags.FLAGS


def init_label(init: str) -> str:
    return init if init == classify.GLOVE6B else os.path.basename(os.path.normpath(init))


def _config(task: str, init: str, mode: str):
    arg = f"task={task},mode={mode},init={init},batch={FLAGS.batch},epochs={FLAGS.epochs}"
    arg += f",lr={FLAGS.lr}" + (f",encoder={FLAGS.encoder}" if FLAGS.encoder else "")
    cfg = classify.get_config(arg)
    cfg.unlock()
    table_common.cap_epochs(cfg, FLAGS.epochs, FLAGS.max_steps, FLAGS.batch)
    return cfg


def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    table_common.check_tasks(FLAGS.tasks, app.UsageError)
    labels = [init_label(i) for i in FLAGS.inits]
    if len(set(labels)) != len(labels):
        raise app.UsageError(f"--inits {FLAGS.inits} share a row label {labels}; rename a dir")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    path = os.path.join(FLAGS.workdir, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for init, label in zip(FLAGS.inits, labels):
        for mode in FLAGS.modes:
            for task in FLAGS.tasks:
                key = f"{label} {mode}/{task}"
                if key in results:
                    continue
                cfg = _config(task, init, mode)
                run_dir = os.path.join(FLAGS.workdir, label, mode, task)
                settings = {"init": init, "mode": mode, "encoder": cfg.model.encoder}
                table_common.run_cell(results, path, key, cfg, run_dir, task, settings,
                                      "vectors", FLAGS.keep_checkpoints)  # fmt: skip


if __name__ == "__main__":
    app.run(main)
