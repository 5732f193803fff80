r"""word2vec (skip-gram or CBOW, negative sampling) on the pretraining corpus.

  python -m tlx.train --config=configs/embeddings/word2vec.py:arch=sg --workdir=runs/w2v_sg
  python -m tlx.evaluate --workdir=runs/w2v_sg --task=word_eval   # -> eval_word_eval.json

Arguments: arch (sg | cbow), dim, window, negatives, sample, min_count, epochs, lr, batch,
noise_group, noise_draws, runlocal.
Defaults are gensim's (dim 100, window 5, negative 5, sample 1e-3, min_count 5, 5 epochs, alpha
0.025 decaying linearly to 0.0001). A step trains `batch` rows of `seq_len` centre words; the
tables shard over the mesh's vocab axis (partition rule 'vocab'). The run ends by writing
WORKDIR/words.txt and WORKDIR/vectors.txt (word2vec text format) and is scored on word_eval
(WordSim-353, SimLex-999 Spearman; Google analogies, 3CosAdd over the top 30k words) each epoch.
Batches stay small (4 rows = 2,048 centres): a row seen n times in a batch gets the sum of its n
updates, as sequential SGD would apply them, and at 8 rows that sum diverges at lr 0.025.

Noise formulation (tlx.models.embeddings): noise_group=1,noise_draws=1 (the default) gives each
centre K noise words shared by its context pairs. noise_group=G,noise_draws=S lets G consecutive
centres share S draws of K (`:noise_group=32,noise_draws=4`): the noise scores become one
[G + 2W, D] x [D, S K] product per group and the step gathers and scatters 20 noise rows per 32
centres instead of 160, so the step is ~2.8x faster (6.8 vs 19.3 ms at 4 x 512 centres on 2 EPYC
cores, `launch/benchmark_loop.py --model=word2vec`); the price is fewer distinct noise words per
epoch (each draw serves ~40 pairs). At the default lr it matched on the benchmark (analogy 8.1%
vs 8.5% per centre, SimLex 0.187 vs 0.176); each shared row sums ~G m / S pair gradients, so
larger G / S (S = 8 per 512-centre row) or batch 8 diverge at lr 0.025.

Expected (2 CPU cores, the 1.6M-word training split, 5 epochs): sg 95 s, WordSim-353 0.19,
SimLex-999 0.18, analogy 8.0% (coverage 31%); cbow 43 s, analogy 6.4% (gensim: 8.6% / 7.1%).
"""

from configs import common


def get_config(arg=None):
    args = common.parse_arg(
        arg,
        arch="sg",
        dim=100,
        window=5,
        negatives=5,
        sample=1e-3,
        min_count=5,
        epochs=5.0,
        lr=0.025,
        batch=4,
        noise_group=1,
        noise_draws=1,
        runlocal=False,
    )
    c = common.base_config()
    c.objective.name = "sgns"
    c.data.task = "skipgram"
    c.data.seq_len = 512  # centre words per row
    c.data.options.window = args.window
    c.data.options.negatives = args.negatives
    c.data.options.sample = args.sample
    c.data.options.min_count = args.min_count
    c.data.options.noise_group = args.noise_group
    c.data.options.noise_draws = args.noise_draws
    c.model = dict(
        name="word2vec",
        vocab_size=None,
        dim=args.dim,
        arch=args.arch,
        window=args.window,
        dtype="float32",
        param_dtype="float32",
    )
    c.optim.name = "sparse_sgd"
    c.optim.duplicates = "sum"
    c.optim.lr = args.lr
    c.optim.end_factor = 1e-4 / 0.025  # gensim's min_alpha 0.0001 at alpha 0.025
    common.word_vector_run(c, args, log_every=50, runlocal_seq_len=64)
    return c
