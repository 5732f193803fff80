r"""Downstream tasks on frozen CoVe: [GloVe; CoVe] (or GloVe alone, or scratch) into a BiLSTM.

  python -m tlx.train --config=configs/cove/finetune.py:task=sst2,init=runs/cove \
      --workdir=runs/cove_sst2
  python launch/feature_table.py --cove=runs/cove --elmo=runs/elmo --workdir=runs/feature_table

Arguments: task (any of `python -m tlx.tasks list`);
features = glove+cove (default: McCann et al. 2017's input, GloVe next to the MT-LSTM
encoder's top layer) | glove (frozen GloVe 6B 50d alone) | scratch (trained embeddings, no
transfer); init = the configs/cove/translate.py run whose encoder (and GloVe table) load, only
read for glove+cove; hidden (task BiLSTM units per direction, 100), dropout (0.5, before the
classifier), feature_dropout (0.0), lr (Adam 1e-3), batch (32), epochs (3), seq_len (0: the
task's default), runlocal (tests).
A pair task reads its whole `[CLS] a [SEP] b [SEP]` row. The pretrained parts are frozen
(optim.frozen and stop_gradient); the task BiLSTM and head train.
Expected: see README's feature-transfer table.
"""

from configs import common

FEATURES = ("glove+cove", "glove", "scratch")


def get_config(arg=None):
    args = common.feature_args(arg, features="glove+cove", init="runs/cove")
    if args.features not in FEATURES:
        raise KeyError(f"features must be one of {FEATURES}, got {args.features!r}")
    cove = common.pretrained_run(args.init, "cove_mt") if args.features == "glove+cove" else None
    c = common.feature_transfer(args, args.features, cove=cove)
    c.lock()
    return c
