r"""Downstream tasks on frozen ELMo: [GloVe; ELMo] into a BiLSTM, ELMo = a learned scalar mix of
the biLM's layers (mix=all) or its top layer (mix=last).

  python -m tlx.train --config=configs/elmo/finetune.py:task=conll2003_ner,mix=all,init=runs/elmo \
      --workdir=runs/elmo_conll

Arguments: task (any of `python -m tlx.tasks list`);
mix = all (gamma * sum_k softmax(s)_k h_k over layer 0 = the char-CNN vector duplicated to the
biLSTM width, and both biLSTM layers; Peters et al. 2018 eq. 1) | last (the top layer only);
mix_l2 (lambda on ||s||^2, 0.0; the paper tried 0.001 and 1); init = the
configs/elmo/pretrain.py run whose biLM loads; hidden, dropout, feature_dropout, lr, batch,
epochs, seq_len, runlocal as in configs/cove/finetune.py. Words reach the biLM as characters
(data.options.char_ids), so the biLM sees every word, even those outside its softmax vocabulary.
Expected: see README's feature-transfer table.
"""

from configs import common

MIXES = ("all", "last")


def get_config(arg=None):
    args = common.feature_args(arg, mix="all", mix_l2=0.0, init="runs/elmo")
    if args.mix not in MIXES:
        raise KeyError(f"mix must be one of {MIXES}, got {args.mix!r}")
    c = common.feature_transfer(args, "elmo", elmo=common.pretrained_run(args.init, "elmo_lm"))
    c.lock()
    return c
