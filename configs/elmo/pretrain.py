r"""ELMo pretraining: a character-CNN bidirectional LSTM language model on the real corpus.

  python -m tlx.train --config=configs/elmo/pretrain.py:size=small --workdir=runs/elmo

Model (Peters et al. 2018): each word's characters (50 per word, begin/end-of-word markers)
-> char CNN -> 2 highway layers -> projection P; two independent 2-layer LSTM stacks with
projection (LSTMP), a residual connection into layer 2, cell / projection clipping at 3; the
forward stack predicts the next word, the backward stack the previous one, through one softmax
they share ("tied"). Loss = the mean of the two directions' token cross-entropies, so
eval/perplexity = exp(eval/lm_loss) is the geometric mean of the two directions' perplexities.

Data: the causal_lm task (held-out documents for eval, packed rows with document ids; no word
predicts across a document boundary) over the corpus' own word vocabulary `words:corpus` (the
14,276 words seen 5+ times in the training split; rarer words are [UNK], as targets and, since
`char_ids` (data.options.char_ids) spells each token of the vocabulary, as input characters too:
`<unk>`). Downstream runs spell the 400,000 words of `words:glove6b`, so there the biLM reads
nearly every word's own characters.

Arguments: size = tiny (tests) | small (LSTM 512, projection 128, filters up to width 5, 256
in all; the shape of launch/benchmark_recurrent.py's PyTorch peer) | full (the paper's 4096 /
512 with 2048 char filters); softmax = full | sampled (num_samples 8192; eval always uses the
full softmax); steps; runlocal (tests).
Expected: see README's ELMo section.
"""

from configs import common


def get_config(arg=None):
    args = common.parse_arg(
        arg, size="small", softmax="full", num_samples=8192, steps=1000, lr=2e-3, runlocal=False
    )
    c = common.base_config()
    c.model = dict(
        name="elmo_lm",
        size=args.size,
        vocab_size=None,  # the softmax vocabulary: data.vocab's (tlx.train fills it in)
        softmax=args.softmax,
        num_samples=args.num_samples,
        dropout_rate=0.1,
        dtype="float32",  # compute: float32 | bfloat16 (tlx.precision)
        param_dtype="float32",  # master weights
        remat="none",  # per LSTM step: none | full | dots | save_proj | ... (tlx.precision)
    )
    c.objective.name = "bilm"
    c.data.task = "causal_lm"
    c.data.vocab = "words:corpus"
    c.data.options.char_ids = True
    c.data.seq_len = 64
    c.train.steps = args.steps
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 250
    c.train.eval_steps = 20
    c.optim.lr = args.lr
    c.optim.warmup_fraction = 0.02
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.checkpoint.every = 250
    c.checkpoint.max_to_keep = 2
    if args.runlocal:
        c.model.size = "tiny"
        c.data.seq_len = 16
        common.runlocal(c, steps=4, every=4, log_every=2, eval_steps=1)
    c.lock()
    return c
