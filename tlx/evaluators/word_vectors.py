"""Word-vector runs (word2vec, GloVe): intrinsic evaluation of the model's table, and its
export as the files downstream configs and gensim read."""

import os

import jax
import numpy as np

import data_pipelines
from data_pipelines import vector_files
from tlx import word_benchmarks
from tlx.evaluators import base


def vectors(setup, cfg, params) -> vector_files.WordVectors:
    """The model's exported table (its `word_vectors` method), with the corpus vocabulary of
    the run's task."""
    table = setup.model.apply({"params": params}, method="word_vectors")
    corpus = data_pipelines.tasks.word_corpus(cfg.data.task_name)
    if corpus is None:
        raise base.ConfigError(f"task {cfg.data.task!r} is not a word corpus: no word vectors")
    table = np.asarray(jax.device_get(table), np.float32)
    return vector_files.WordVectors(list(corpus.words), table)


class Intrinsic(base.Evaluator):
    """WordSim-353 and SimLex-999 Spearman, Google analogies (tlx.word_benchmarks)."""

    reads_split = False
    shown = ("wordsim353/spearman", "simlex999/spearman", "analogy/total_accuracy")

    def run(self, params) -> dict[str, float]:
        return word_benchmarks.evaluate(
            vectors(self.setup, self.cfg, params), self.cfg.data.data_dir or None
        )


class Export(base.Evaluator):
    """WORKDIR/words.txt (word, count) and WORKDIR/vectors.txt (word2vec text format), the
    files `configs/embeddings/classify.py:init=WORKDIR` and gensim read."""

    reads_split = False

    def run(self, params) -> dict[str, float]:
        found = vectors(self.setup, self.cfg, params)
        if jax.process_index() == 0:
            corpus = data_pipelines.tasks.word_corpus(self.cfg.data.task_name)
            corpus.write_vocab(os.path.join(self.workdir, "words.txt"))
            path = os.path.join(self.workdir, "vectors.txt")
            vector_files.save(found, path, "word2vec")
            print(f"wrote {len(found)} x {found.dim} vectors to {path}", flush=True)
        return {"words": float(len(found)), "dim": float(found.dim)}
