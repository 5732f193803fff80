r"""GloVe on the pretraining corpus: co-occurrences (window 10, 1/distance) counted once and
cached, then AdaGrad on the weighted least squares, as glove.c does.

  python -m tlx.train --config=configs/embeddings/glove.py --workdir=runs/glove
  python -m tlx.evaluate --workdir=runs/glove --task=word_eval

Arguments: dim, window, x_max, alpha, min_count, epochs, lr, runlocal. Defaults follow the
paper / glove.c (x_max 100, alpha 0.75, AdaGrad lr 0.05 with accumulators starting at 1); the
exported vectors are W + W~ (WORKDIR/vectors.txt, word2vec text format).

Expected (2 CPU cores, 4.83M co-occurrence entries, 25 epochs): 232 s, WordSim-353 0.16,
SimLex-999 0.07, analogy 4.1% (glove-python on the same counts: 4.4%).
"""

from configs import common


def get_config(arg=None):
    args = common.parse_arg(
        arg,
        dim=100,
        window=10,
        x_max=100.0,
        alpha=0.75,
        min_count=5,
        epochs=25.0,
        lr=0.05,
        batch=16,
        runlocal=False,
    )
    c = common.base_config()
    c.objective.name = "glove"
    c.data.task = "glove"
    c.data.seq_len = 4096  # co-occurrence entries per row
    c.data.options.window = args.window
    c.data.options.x_max = args.x_max
    c.data.options.alpha = args.alpha
    c.data.options.min_count = args.min_count
    c.model = dict(
        name="glove", vocab_size=None, dim=args.dim, dtype="float32", param_dtype="float32"
    )
    c.optim.name = "sparse_adagrad"
    c.optim.lr = args.lr
    c.optim.end_factor = 1.0  # constant, as glove.c
    c.optim.initial_accumulator = 1.0
    common.word_vector_run(c, args, log_every=25, runlocal_seq_len=256)
    return c
