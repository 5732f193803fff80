r"""BERT finetuning on a downstream task, following the BERT paper's recipe.

  python -m tlx.train --config=configs/bert/finetune.py:task=mrpc,size=mini \
      --config.transfer.init_from=runs/bert_mini --workdir=runs/bert_mini_mrpc
  python -m tlx.train --config=configs/bert/finetune.py:task=conll2003_ner,init=runs/minilm \
      --workdir=runs/minilm_conll     # init=DIR: take shape, vocabulary and weights from DIR
  python -m tlx.train --config=configs/bert/finetune.py:task=ag_news,init=runs/minilm,scratch \
      --workdir=runs/scratch_ag_news  # DIR's shape and vocabulary, fresh weights

Arguments (after the colon, comma-separated):
  task     any downstream task of `python -m tlx.tasks list`: a sentence or pair task
           classifies from [CLS], a tagging task tags each word's first sub-word; or glue_mix
           (multi-task: sst2, trec, mrpc, rte sampled at `rates`, one head per task; dev
           score = the tasks' average primary metric). The task's registry entry gives the
           head, its classes and data.seq_len.
  rates    glue_mix sampling rates, e.g. rates=sst2=1;trec=1;mrpc=2;rte=2 (default: by size).
  mode     finetune: every weight trains, the head reads the pooled [CLS] (tagging: the last
           layer); feature: the encoder is frozen (stop_gradient + optim.frozen) and the head
           reads the concatenation of the last four layers through one hidden layer, as in
           the BERT paper's feature-based NER study.
  lr, batch, epochs   the paper's grid is lr {5e-5, 3e-5, 2e-5}, batch {16, 32}, epochs
           {2, 3, 4}, with 10% warmup then linear decay; evaluation runs every epoch and the best
           dev checkpoint is kept in WORKDIR/best (score it with `python -m tlx.evaluate`).
  size     tiny | mini | small | base | large; init=DIR overrides it with DIR's shape.
  init     a tlx run dir or a `tlx.convert import-hf` dir: sets transfer.init_from, the model
           shape (and GELU variant) from DIR/config.json, and the vocabulary (DIR/vocab.txt,
           or the run's data.vocab).
  scratch  with init: from scratch at DIR's shape and vocabulary (no transfer.init_from): the
           "same model, no pretraining" baseline of launch/finetune_table.py.
  runlocal a few steps on tiny batches, for tests.

Without `init` / transfer.init_from the same model trains from scratch.
"""

from configs import common

SHAPE = (
    "num_layers",
    "hidden_size",
    "num_heads",
    "intermediate_size",
    "vocab_size",
    "max_position",
    "type_vocab_size",
    "layer_norm_eps",
    "gelu",
)


def get_config(arg=None):
    args = common.parse_arg(
        arg,
        task="sst2",
        size="mini",
        mode="finetune",
        init="",
        scratch=False,
        lr=0.0,
        batch=32,
        epochs=3.0,
        rates="",
        runlocal=False,
    )
    task = common.downstream_task(args.task, mixture=True)
    if args.mode not in ("finetune", "feature"):
        raise KeyError(f"mode must be finetune or feature, got {args.mode!r}")
    if args.scratch and not args.init:
        raise KeyError("scratch takes its shape from init=DIR; without init it is the default")
    feature = args.mode == "feature"

    c = common.base_config()
    c.model = dict(
        name=f"bert_{task.head}",
        size=args.size,
        num_classes=task.num_classes,
        vocab_size=30522,
        max_position=512,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        gelu="tanh",
        dtype="float32",  # compute: float32 | bfloat16 (tlx.precision)
        param_dtype="float32",  # master weights
        remat="none",  # none | full | dots | save_proj | save_out | a jax.checkpoint_policies name
        attention_impl="xla",  # xla | cudnn (cuDNN flash attention: GPU, bfloat16)
        features=("last4_concat" if feature else ("last" if task.tagging else "pooled")),
        head_hidden=256 if feature else 0,
        frozen_encoder=feature,
        # Present so init=DIR (or --config.model.*) can set a non-standard shape:
        num_layers=None,
        hidden_size=None,
        num_heads=None,
        intermediate_size=None,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    )
    common.downstream_training(c, task)
    c.data.task = args.task
    c.data.seq_len = task.seq_len
    common.epochs_schedule(c, args.epochs, args.batch)
    # The paper's {5e-5, 3e-5, 2e-5} is for base/large; small BERTs need more (Turc et al. 2019
    # tune up to 1e-4; in short budgets BERT-mini learns SST-2 at 3e-4 and stays at chance at
    # 1e-4). A frozen encoder's fresh head takes a larger rate still.
    small = args.size in ("tiny", "mini", "small")
    c.optim.lr = args.lr or (1e-3 if feature else 3e-4 if small else 3e-5)
    c.optim.warmup_fraction = 0.1
    c.optim.frozen = ["encoder/.*"] if feature else []
    c.checkpoint.every = 100_000  # resume points; the best dev checkpoint is kept separately
    c.checkpoint.max_to_keep = 1
    c.transfer.dont_load = ["head/.*"]
    c.transfer.ignore = ["mlm_head/.*", "nsp_head/.*"]
    if task.members:  # a mixture is sampled, so a step budget rather than epochs
        c.data.options = dict(tasks=list(task.members), rates=args.rates)
        c.train.epochs, c.train.steps, c.train.eval_every = 0.0, 1000, 250
    if args.init:
        shape, c.data.vocab = common.init_source(args.init, SHAPE)
        c.model.update(shape)
        c.transfer.init_from = "" if args.scratch else args.init
        if c.model.size not in ("tiny", "mini", "small", "base", "large", "custom"):
            c.model.size = "custom"
    if args.runlocal:
        c.data.seq_len = 32
        common.runlocal(c, steps=4, every=4, log_every=2, eval_steps=2)
    c.lock()
    return c
