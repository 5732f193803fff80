r"""The README's demo: pretrain BERT-mini on the real corpus, then finetune SST-2 from it and
from scratch, and print what transfer bought.

  python launch/demo.py --workdir=runs/demo [--pretrain_steps=N --finetune_steps=N]

Steps: (1) train a SentencePiece vocabulary on the corpus (cached), (2) pretrain BERT-mini with
MLM + NSP and save Orbax checkpoints, (3) finetune SST-2 from that checkpoint, (4) finetune the
same architecture from scratch, (5) print a table, also written to WORKDIR/summary.json (MLM /
NSP accuracy as the fractions the runs record, SST-2 accuracy x 100 in percent). Every stage
is an ordinary `tlx.train` run in its own workdir, so each can be inspected, resumed or rerun
from the command line.

Data: $TLX_DATA_DIR when set; otherwise the datasets it reads (the pretraining corpus, SST-2,
and the BERT vocabulary for --vocab=bert_uncased) are fetched and verified into
~/.cache/tlx/data first (see `python -m tlx.data list`).
"""

import json
import os
import time

from absl import app, flags

from configs.bert import finetune, pretrain
from data_pipelines import corpus, vocabularies
from tlx import metrics, train
from tlx.data import fetch

flags.DEFINE_string("workdir", "runs/demo", "Directory for the demo's runs.")
flags.DEFINE_string("size", "mini", "BERT size for both pretraining and finetuning.")
flags.DEFINE_string(
    "vocab",
    "sp8000",
    "Vocabulary spec: spN trains a SentencePiece model of N "
    "pieces on the corpus (cached); bert_uncased is the standard BERT WordPiece.",
)
flags.DEFINE_integer("pretrain_steps", 250, "Pretraining steps (batch 32, seq 128).")
flags.DEFINE_integer("finetune_steps", 250, "SST-2 finetuning steps (batch 32, seq 64).")
FLAGS = flags.FLAGS


def _run(cfg, workdir: str, name: str) -> tuple[dict, float]:
    print(f"\n=== {name}: {workdir} ===", flush=True)
    start = time.time()
    final = train.train_and_evaluate(cfg, workdir)
    return final, time.time() - start


def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    root = os.path.abspath(FLAGS.workdir)
    vocab = FLAGS.vocab
    # Without TLX_DATA_DIR, the datasets the demo reads are fetched into the cache first.
    needs = [*corpus.DEFAULT_SOURCES, "sst2"]
    fetch.ensure(needs + ["minilm_l6_bert_uncased"] if vocab == "bert_uncased" else needs)
    print(f"=== vocabulary: {vocabularies.get_vocabulary(vocab)} ===", flush=True)
    vocab_len = vocabularies.get_vocabulary(vocab).vocab_size

    def config(module, arg: str, steps: int):
        cfg = module.get_config(arg)
        cfg.unlock()
        cfg.data.vocab, cfg.model.vocab_size = vocab, vocab_len
        cfg.train.epochs = 0.0  # a fixed step budget, not the finetuning recipe's epochs
        cfg.train.steps = cfg.train.eval_every = cfg.checkpoint.every = steps
        return cfg

    pre = config(pretrain, f"size={FLAGS.size}", FLAGS.pretrain_steps)
    pre_final, pre_time = _run(pre, os.path.join(root, "pretrain"), "pretrain BERT")

    results = {}
    for name, init_from in (("pretrained", os.path.join(root, "pretrain")), ("scratch", "")):
        ft = config(finetune, f"task=sst2,size={FLAGS.size}", FLAGS.finetune_steps)
        ft.transfer.init_from = init_from
        results[name] = _run(ft, os.path.join(root, f"sst2_{name}"), f"SST-2 from {name}")

    def percent(name: str) -> str:  # metrics are fractions in [0, 1]; the table shows percent
        return f"{100 * results[name][0]['eval/accuracy']:.1f}"

    rows = [
        ("pretraining eval MLM accuracy", f"{pre_final['eval/mlm_accuracy']:.3f}"),
        ("pretraining eval NSP accuracy", f"{pre_final['eval/nsp_accuracy']:.3f}"),
        ("SST-2 dev accuracy %, pretrained", percent("pretrained")),
        ("SST-2 dev accuracy %, from scratch", percent("scratch")),
        (
            "time: pretrain / finetune x2 (s)",
            f"{pre_time:.0f} / {results['pretrained'][1]:.0f} + {results['scratch'][1]:.0f}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print(f"\nTensorBoard: tensorboard --logdir {root}")
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(dict(rows), f, indent=2)


if __name__ == "__main__":
    app.run(main)
