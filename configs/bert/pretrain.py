r"""BERT pretraining (MLM + NSP) on the real corpus under $TLX_DATA_DIR/pretrain.

  python -m tlx.train --config=configs/bert/pretrain.py:size=mini --workdir=runs/bert_mini

Sizes: tiny (L2 H128), mini (L4 H256), small (L4 H512), base (L12 H768 A12), large (L24 H1024
A16); `runlocal` shrinks the run to a few CPU steps (used by the test suite).
Expect (mini, 600 steps, batch 32, seq 128, 2 CPU cores, ~8 min): see README's demo table.
"""

from configs import common


def get_config(arg=None):
    args = common.parse_arg(arg, size="mini", runlocal=False)
    c = common.base_config()
    c.model = dict(
        name="bert_pretrain",
        size=args.size,
        vocab_size=30522,
        max_position=512,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        gelu="tanh",
        dtype="float32",  # compute: float32 | bfloat16 (tlx.precision)
        param_dtype="float32",  # master weights
        remat="none",  # none | full | dots | save_proj | save_out | a jax.checkpoint_policies name
        attention_impl="xla",  # xla | cudnn (cuDNN flash attention: GPU, bfloat16)
        mlm_all_positions=False,
    )
    c.objective.name = "mlm_nsp"
    c.data.task = "bert_pretrain"
    c.data.seq_len = 128
    c.data.options = dict(
        max_predictions_per_seq=20,
        mask_rate=0.15,
        mask_token_prob=0.8,
        random_token_prob=0.1,
        random_next_prob=0.5,
        short_seq_prob=0.1,
    )
    c.train.steps = 600
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.eval_steps = 10
    # Small BERTs take a larger peak LR than base/large's 1e-4 (1e-3 was worse than 5e-4 for
    # BERT-mini in the 250-step demo: eval MLM accuracy 0.027 vs 0.073).
    c.optim.lr = 5e-4 if args.size in ("tiny", "mini", "small") else 1e-4
    c.optim.warmup_fraction = 0.1
    c.checkpoint.every = 200
    if args.runlocal:
        c.data.seq_len = 64
        c.data.options.max_predictions_per_seq = 10
        c.train.steps = 4
        c.train.batch_size = 8
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.eval_steps = 1
        c.checkpoint.every = 2
    c.lock()
    return c
