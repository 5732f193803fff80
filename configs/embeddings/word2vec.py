r"""word2vec (skip-gram or CBOW, negative sampling) on the pretraining corpus.

  python -m tlx.train --config=configs/embeddings/word2vec.py:arch=sg --workdir=runs/w2v_sg
  python -m tlx.evaluate --workdir=runs/w2v_sg --task=word_eval   # -> eval_word_eval.json

Arguments: arch (sg | cbow), dim, window, negatives, sample, min_count, epochs, lr, runlocal.
Defaults are gensim's (dim 100, window 5, negative 5, sample 1e-3, min_count 5, 5 epochs, alpha
0.025 decaying linearly to 0.0001). A step trains `batch` rows of `seq_len` centre words; the
tables shard over the mesh's vocab axis (partition rule 'vocab'). The run ends by writing
WORKDIR/words.txt and WORKDIR/vectors.txt (word2vec text format) and is scored on word_eval
(WordSim-353, SimLex-999 Spearman; Google analogies, 3CosAdd over the top 30k words) each epoch.
Batches stay small (4 rows = 2,048 centres): a row seen n times in a batch gets the sum of its n
updates, as sequential SGD would apply them, and at 8 rows that sum diverges at lr 0.025.

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
    c.model = dict(
        name="word2vec", vocab_size=None, dim=args.dim, arch=args.arch, window=args.window
    )
    c.optim.name = "sparse_sgd"
    c.optim.duplicates = "sum"
    c.optim.lr = args.lr
    c.optim.end_factor = 1e-4 / 0.025  # gensim's min_alpha 0.0001 at alpha 0.025
    common.word_vector_run(c, args, log_every=50, runlocal_seq_len=64)
    return c
