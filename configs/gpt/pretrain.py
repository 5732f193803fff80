r"""GPT causal-LM pretraining on the real corpus under $TLX_DATA_DIR/pretrain.

  python -m tlx.train --config=configs/gpt/pretrain.py:size=mini --workdir=runs/gpt_mini
  python -m tlx.generate --workdir=runs/gpt_mini --prompt="The president said" --top_k=40 \
      --temperature=0.8

Arguments: size = tiny (L2 H128) | mini (L4 H256) | small (L12 H768 A12, GPT-1 / GPT-2 small);
variant = gpt2 (pre-LN, final LayerNorm; default) | gpt1 (post-LN); vocab = a vocabulary spec
(default sp8000, a SentencePiece model trained on the corpus on first use; model.vocab_size
follows it); runlocal = a few CPU steps (tests).
Data: documents end with an end-of-document token and are packed several per row; attention
and positions restart at each document, and the loss skips padding and document ends. Eval
reports held-out loss and perplexity (eval/perplexity = exp(eval/lm_loss)).
Expect (mini, sp8000, 200 steps, batch 32, seq 128, 2 CPU cores): see README's GPT section.
"""

from configs import common


def get_config(arg=None):
    args = common.parse_arg(arg, size="mini", variant="gpt2", vocab="sp8000", runlocal=False)
    c = common.base_config()
    c.model = dict(
        name="gpt_lm",
        size=args.size,
        variant=args.variant,
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
    )
    c.objective.name = "causal_lm"
    # 0 materialises [B, L, V] float32 logits for the LM loss: the faster choice at these
    # shapes on CPU and on GPU in float32 (launch/README.md, GPT benchmark). N > 0 uses the
    # fused tied cross-entropy over chunks of N positions, which never holds [B, L, V]: use it
    # when batch x length x vocab logits would not fit (e.g. 32 positions a chunk).
    c.objective.xent_chunk = 0
    c.data.task = "causal_lm"
    c.data.vocab = args.vocab
    c.data.seq_len = 128
    c.train.steps = 600
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 100
    c.train.eval_steps = 20
    # GPT-1: Adam, peak 2.5e-4 after 2000 warmup steps; small models on short budgets take more.
    c.optim.lr = 1e-3 if args.size in ("tiny", "mini") else 2.5e-4
    c.optim.warmup_fraction = 0.05
    c.optim.b2 = 0.98
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.01
    c.checkpoint.every = 200
    if args.runlocal:
        c.data.seq_len = 64
        c.train.steps = 4
        c.train.batch_size = 8
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.eval_steps = 1
        c.checkpoint.every = 2
    c.lock()
    return c
