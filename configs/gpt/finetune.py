r"""GPT finetuning on a downstream task (GPT-1 section 3.3): L = L_task + lm_coef * L_lm.

  python -m tlx.train --config=configs/gpt/finetune.py:task=sst2,init=runs/gpt_mini \
      --config.objective.lm_coef=0.5 --workdir=runs/gpt_mini_sst2

Arguments (after the colon, comma-separated):
  task     any downstream task of `python -m tlx.tasks list` (its registry entry gives the
           head, its classes and data.seq_len). Inputs are framed `<s> text <e>` and, for
           pairs, `<s> a $ b <e>` (data option framing='gpt'; <s> = [CLS], $ = [SEP],
           <e> = [MASK] of the vocabulary); the classifier reads the final state at <e>, the
           last token; taggers read every token's (left-context) state.
  lm_coef  lambda of the auxiliary LM loss over the task inputs (GPT-1: 0.5, the default when
           finetuning; 0 = off, which also skips computing it, the default in feature mode,
           where the decoder cannot change). Also --config.objective.lm_coef=...
  mode     finetune (everything trains) | feature (the decoder is frozen: stop_gradient +
           optim.frozen, and the head reads the last four layers through one hidden layer).
  init     a tlx gpt_lm run dir: sets transfer.init_from, the model shape / variant and the
           vocabulary from DIR. (A `tlx.convert import-hf --model=gpt2` dir holds weights
           only: GPT-2's BPE vocabulary is not a tlx vocabulary yet, so it is refused here.)
  scratch  with init: from scratch at DIR's shape, variant and vocabulary (no
           transfer.init_from), e.g. `init=runs/gpt_mini,scratch`: the "same model, no
           pretraining" baseline of launch/finetune_table.py.
  size, variant, vocab   the model when training from scratch (no init).
  lr, batch, epochs      GPT-1: 6.25e-5, 32, 3 epochs, warmup 0.2%, linear decay (the default
           for size small); tiny / mini take 3e-4 (as BERT-mini does), feature mode 1e-3.
  runlocal a few steps on tiny batches, for tests.
"""

from configs import common

SHAPE = (
    "num_layers",
    "hidden_size",
    "num_heads",
    "intermediate_size",
    "vocab_size",
    "max_position",
    "layer_norm_eps",
    "gelu",
    "variant",
)


def get_config(arg=None):
    args = common.parse_arg(
        arg,
        task="sst2",
        size="mini",
        variant="gpt2",
        vocab="sp8000",
        mode="finetune",
        init="",
        scratch=False,
        lm_coef=-1.0,  # -1: 0.5 (GPT-1) when finetuning, 0 in feature mode
        lr=0.0,
        batch=32,
        epochs=3.0,
        runlocal=False,
    )
    task = common.downstream_task(args.task)
    if args.mode not in ("finetune", "feature"):
        raise KeyError(f"mode must be finetune or feature, got {args.mode!r}")
    if args.scratch and not args.init:
        raise KeyError("scratch takes its shape from init=DIR; without init it is the default")
    feature = args.mode == "feature"

    c = common.base_config()
    c.model = dict(
        name=f"gpt_{task.head}",
        size=args.size,
        variant=args.variant,
        num_classes=task.num_classes,
        vocab_size=None,  # None: the data vocabulary's size
        max_position=512,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        layer_norm_eps=1e-5,
        gelu="tanh",
        dtype="float32",  # compute: float32 | bfloat16 (tlx.precision)
        param_dtype="float32",  # master weights
        remat="none",  # none | full | dots | save_proj | save_out | a jax.checkpoint_policies name
        attention_impl="xla",  # xla | cudnn (cuDNN flash attention: GPU, bfloat16)
        features="last4_concat" if feature else "last",
        head_hidden=256 if feature else 0,
        frozen_encoder=feature,
        num_layers=None,
        hidden_size=None,
        num_heads=None,
        intermediate_size=None,
    )
    common.downstream_training(c, task)
    c.objective.lm_coef = args.lm_coef if args.lm_coef >= 0 else (0.0 if feature else 0.5)
    # 0 materialises [B, L, V] float32 logits for the LM loss: the faster choice at these
    # shapes on CPU and on GPU in float32 (launch/README.md, GPT benchmark). N > 0 uses the
    # fused tied cross-entropy over chunks of N positions, which never holds [B, L, V]: use it
    # when batch x length x vocab logits would not fit (e.g. 32 positions a chunk).
    c.objective.xent_chunk = 0
    c.data.task = args.task
    c.data.vocab = args.vocab
    c.data.options = dict(framing="gpt")
    c.data.seq_len = task.seq_len
    common.epochs_schedule(c, args.epochs, args.batch)
    init_shape, init_vocab = common.init_source(args.init, SHAPE) if args.init else ({}, "")
    size = init_shape.get("size", args.size)  # a pretrained run's size decides
    small_model = size in ("tiny", "mini")
    c.optim.lr = args.lr or (1e-3 if feature else 3e-4 if small_model else 6.25e-5)
    c.optim.warmup_fraction = 0.002 if args.epochs >= 1 else 0.1
    c.optim.frozen = ["encoder/.*"] if feature else []
    c.checkpoint.every = 100_000  # resume points; the best dev checkpoint is kept separately
    c.checkpoint.max_to_keep = 1
    c.transfer.dont_load = ["head/.*"]
    if args.init:
        c.model.update(init_shape)
        c.data.vocab = init_vocab
        c.transfer.init_from = "" if args.scratch else args.init
        if c.model.size not in ("tiny", "mini", "small", "custom"):
            c.model.size = "custom"
    layers = c.model.num_layers or {"tiny": 2, "mini": 4, "small": 12}.get(c.model.size, 4)
    if feature and layers < 4:  # the last four layers do not exist: read the last one
        c.model.features = "last"
    if args.runlocal:
        c.data.seq_len = 32
        common.runlocal(c, steps=4, every=4, log_every=2, eval_steps=2)
    c.lock()
    return c
