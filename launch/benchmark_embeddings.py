r"""word2vec and GloVe: tlx vs gensim Word2Vec and glove-python, speed and quality, one run.

  python launch/benchmark_embeddings.py [--variants=sg,cbow,glove] [--epochs=5] \
      [--glove_epochs=25] [--out=runs/bench_embeddings.json]

Corpus: the training split of the pretraining corpus as tlx tokenizes it (data_pipelines.words,
min-count 5); both libraries get the same sentences of in-vocabulary words, so the vocabulary
and the words counted are identical.

word2vec (dim 100, window 5, negative 5, sample 1e-3, alpha 0.025 -> 0.0001, 5 epochs):
  tlx     `python -m tlx.train --config=configs/embeddings/word2vec.py:arch=ARCH` as a user runs
          it (SeqIO pipeline, jitted sparse step, checkpoints), evaluation only at the end;
  gensim  gensim.models.Word2Vec(workers = number of cores), vocabulary built beforehand.
  words/s = epochs x corpus words / training wall time. tlx's wall time is end to end: JIT
  compilation, pipeline start-up, checkpoint writes, everything but its final word_eval; gensim's
  is its `train()` call. tlx's steady-state rate (median of its logged windows, centre words/s
  divided by the fraction that survives subsampling) is reported alongside.
GloVe (dim 100, window 10, x_max 100, alpha 0.75, AdaGrad lr 0.05):
  tlx     configs/embeddings/glove.py on the cached co-occurrence matrix (its counting time is
          reported separately);
  peer    glove-python (`pip install bicleaner-ai-glove`) `Glove.fit` on the same matrix, upper
          triangle as its own Corpus produces, threads = cores. entries/s = epochs x entries
          trained per epoch / fit time (tlx trains both (i, j) and (j, i), as glove.c does).
sparse_vs_dense: one skip-gram step on synthetic rows at vocabulary sizes 14,276 (this corpus)
and 400,000 (GloVe 6B's), tlx.sparse row updates vs optax SGD on dense [V, D] gradients.
Quality: every vector set is scored by tlx.word_eval (WordSim-353 and SimLex-999 Spearman, Google
analogies 3CosAdd over the 30k most frequent words). Each variant runs in its own process.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import bench_common
import numpy as np

QUALITY = (
    "wordsim353/spearman",
    "simlex999/spearman",
    "analogy/semantic_accuracy",
    "analogy/syntactic_accuracy",
    "analogy/total_accuracy",
    "analogy/coverage",
)


def _sentences(wc) -> list[list[str]]:
    cuts = np.flatnonzero(np.diff(wc.sentence)) + 1
    words = np.array(wc.words, dtype=object)
    return [list(words[s]) for s in np.split(wc.ids, cuts)]


def _quality(vectors) -> dict:
    from tlx import word_eval

    metrics = word_eval.evaluate(vectors)
    return {k: metrics[k] for k in QUALITY}


def run_tlx(arch: str, epochs: float, glove_epochs: float, w2v_args: str = "") -> dict:
    """arch: sg | cbow | glove, or sg_dense / cbow_dense (optax SGD on dense [V, D] gradients
    instead of tlx.sparse's row updates: the sparse-vs-dense measurement)."""
    arch, _, dense = arch.partition("_")
    from configs.embeddings import glove as glove_config
    from configs.embeddings import word2vec as w2v_config
    from data_pipelines import cooccur, skipgram, words
    from tlx import train, wordvec

    wc = words.load_corpus(words.CorpusOptions())  # the configs' default corpus
    if arch == "glove":
        cfg = glove_config.get_config(f"epochs={glove_epochs}")
        opts = cooccur.GloveOptions()
        t0 = time.perf_counter()  # counting from scratch (runs read the cached result)
        entries = len(cooccur.count(wc.ids, wc.sentence, wc.vocab_size, opts.window)[0])
        count_s = time.perf_counter() - t0
        cooccur.load_cooccurrences(opts)
    else:
        cfg = w2v_config.get_config(
            ",".join(filter(None, [f"arch={arch},epochs={epochs}", w2v_args]))
        )
        if dense:
            cfg.optim.name = "sgd"
        count_s = None
    cfg.train.eval_every = 10**9  # only the final evaluation
    cfg.checkpoint.every = 10**9  # only the final checkpoint
    workdir = tempfile.mkdtemp(prefix=f"bench_{arch}_")
    t0 = time.perf_counter()
    train.train_and_evaluate(cfg, workdir)
    total_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    vectors = wordvec.load(os.path.join(workdir, "vectors.txt"))
    quality = _quality(vectors)
    eval_s = time.perf_counter() - t1  # the loop's final word_eval costs about as much
    wall = total_s - eval_s
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logs = [json.loads(line) for line in f]
    rates = [r["tokens_per_sec"] for r in logs if "tokens_per_sec" in r][1:]  # drop compile
    name = f"tlx_{arch}_dense" if dense else f"tlx_{arch}"
    result = dict(variant=name, wall_s=wall, quality=quality, workdir=workdir)
    if arch == "glove":
        e = cfg.train.epochs
        result.update(entries=entries, count_s=count_s, epochs=e,
                      entries_per_s=e * entries / wall,
                      steady_entries_per_s=statistics.median(rates) if rates else None)  # fmt: skip
    else:
        keep = skipgram.keep_probability(wc.counts, cfg.data.options.sample)[wc.ids].mean()
        result.update(words=len(wc.ids), epochs=epochs, words_per_s=epochs * len(wc.ids) / wall,
                      steady_words_per_s=statistics.median(rates) / keep if rates else None,
                      keep_fraction=float(keep))  # fmt: skip
    return result


def run_sparse_vs_dense(vocab_sizes=(14276, 400000), rows=4, steps=30) -> dict:
    """One skip-gram train step on synthetic rows (4 x 512 centres, window 5, 5 noise words,
    dim 100) at several vocabulary sizes: tlx.sparse's row updates vs optax SGD on the dense
    [V, D] gradients. Median step time of `steps` steps after a warm-up step."""
    import flax
    import jax
    import jax.numpy as jnp
    import optax

    from tlx import objectives, sparse
    from tlx.models.embeddings import Word2Vec

    @flax.struct.dataclass
    class State:
        step: jnp.ndarray
        params: dict
        opt_state: dict
        rng: jnp.ndarray

    w, k, c, d = 5, 5, 512, 100
    out = {}
    for v in vocab_sizes:
        rng = np.random.default_rng(0)
        batch = {
            "tokens": rng.integers(0, v, (rows, c + 2 * w)).astype(np.int32),
            "sentence": (np.arange(rows * (c + 2 * w)) // 20).reshape(rows, -1).astype(np.int32),
            "window": rng.integers(1, w + 1, (rows, c)).astype(np.int32),
            "negatives": rng.integers(0, v, (rows, c, k)).astype(np.int32),
        }
        model = Word2Vec(v, d, "sg", w)
        params = flax.linen.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
        schedule = optax.linear_schedule(0.025, 0.0001, 10_000)
        opt = sparse.SparseOptimizer("sparse_sgd", schedule)
        dense_tx = optax.sgd(schedule)

        def dense_step(state, batch, model=model, dense_tx=dense_tx):
            def loss(tables):
                return objectives.sgns(model.apply({"params": tables}, batch)[0], batch)

            (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
            updates, opt_state = dense_tx.update(grads, state.opt_state, state.params)
            new = optax.apply_updates(state.params, updates)
            return state.replace(step=state.step + 1, params=new, opt_state=opt_state), metrics

        for name, fn, tx in (("sparse", sparse.make_train_step(model, objectives.sgns, opt), opt),
                             ("dense", dense_step, dense_tx)):  # fmt: skip
            p = jax.tree.map(jnp.copy, params)
            state = State(jnp.zeros([], jnp.int32), p, tx.init(p), jax.random.PRNGKey(0))
            step = jax.jit(fn, donate_argnums=0)
            holder = [state]

            def one(step=step, holder=holder, batch=batch):
                holder[0], _ = step(holder[0], batch)
                jax.block_until_ready(holder[0])

            times = bench_common.time_steps(one, 1, steps)
            out[f"{name}_ms@V={v}"] = 1e3 * statistics.median(times)
        out[f"dense/sparse@V={v}"] = out[f"dense_ms@V={v}"] / out[f"sparse_ms@V={v}"]
    return dict(variant="sparse_vs_dense", rows=rows, centres_per_step=rows * c, **out)


def run_gensim(arch: str, epochs: float) -> dict:
    from gensim.models import Word2Vec

    from data_pipelines import words
    from tlx.wordvec import WordVectors

    wc = words.load_corpus(words.CorpusOptions())
    sentences = _sentences(wc)
    model = Word2Vec(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5,
                     sg=int(arch == "sg"), workers=os.cpu_count(), seed=0, alpha=0.025,
                     min_alpha=0.0001)  # fmt: skip
    model.build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=int(epochs))
    wall = time.perf_counter() - t0
    wv = model.wv
    vectors = WordVectors(list(wv.index_to_key), np.asarray(wv.vectors, np.float32))
    return dict(variant=f"gensim_{arch}", wall_s=wall, words=len(wc.ids), epochs=epochs,
                words_per_s=epochs * len(wc.ids) / wall, vocab=len(wv),
                quality=_quality(vectors))  # fmt: skip


def run_glove_python(epochs: float) -> dict:
    import scipy.sparse
    from glove import Glove

    from data_pipelines import cooccur, words
    from tlx.wordvec import WordVectors

    wc = words.load_corpus(words.CorpusOptions())
    row, col, value = cooccur.load_cooccurrences(cooccur.GloveOptions())
    upper = row < col
    v = wc.vocab_size
    x = value[upper].astype(np.float64)  # glove-python's Cython loop takes float64 counts
    matrix = scipy.sparse.coo_matrix((x, (row[upper], col[upper])), shape=(v, v))
    model = Glove(no_components=100, learning_rate=0.05, alpha=0.75, max_count=100, random_state=0)
    t0 = time.perf_counter()
    model.fit(matrix, epochs=int(epochs), no_threads=os.cpu_count())
    wall = time.perf_counter() - t0
    vectors = WordVectors(list(wc.words), np.asarray(model.word_vectors, np.float32))
    n = int(upper.sum())
    return dict(variant="glove_python", wall_s=wall, entries=n, epochs=epochs,
                entries_per_s=epochs * n / wall, quality=_quality(vectors))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", default="sg,cbow,sg_dense,glove,sparse_vs_dense")
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--glove_epochs", type=float, default=25)
    p.add_argument("--w2v_args", default="", help="more word2vec config args, k=v,k=v")
    p.add_argument("--only", default="")
    p.add_argument("--out", default="runs/bench_embeddings.json")
    a = p.parse_args()
    os.environ.setdefault("TLX_DATA_DIR", os.path.join(bench_common.ROOT, "..", "shared", "data"))
    if a.only:
        lib, _, arch = a.only.partition(":")
        if lib == "sparse_vs_dense":
            bench_common.emit(run_sparse_vs_dense())
        elif lib == "tlx":
            bench_common.emit(run_tlx(arch, a.epochs, a.glove_epochs, a.w2v_args))
        elif lib == "gensim":
            bench_common.emit(run_gensim(arch, a.epochs))
        else:
            bench_common.emit(run_glove_python(a.glove_epochs))
        return
    flags = [f"--epochs={a.epochs}", f"--glove_epochs={a.glove_epochs}", f"--w2v_args={a.w2v_args}"]
    results = {"machine": bench_common.machine(), "runs": []}
    for variant in a.variants.split(","):
        if variant == "glove":
            pair = ["tlx:glove", "glove_python:"]
        elif variant == "sparse_vs_dense":
            pair = ["sparse_vs_dense:"]
        elif variant.endswith("_dense"):
            pair = [f"tlx:{variant}"]
        else:
            pair = [f"tlx:{variant}", f"gensim:{variant}"]
        for only in pair:
            print(f"running {only} ...", flush=True)
            r = bench_common.spawn(__file__, only, flags)
            results["runs"].append(r)
            print(json.dumps(r, indent=1), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    _table(results["runs"])


def _table(runs: list[dict]) -> None:
    by = {r["variant"]: r for r in runs}
    print("\n| variant | rate | ratio | WS353 | SimLex | analogy sem / syn / total (coverage) |")
    print("|---|---|---|---|---|---|")
    for tlx_name, peer_name, unit in (("tlx_sg", "gensim_sg", "words_per_s"),
                                      ("tlx_sg_dense", "gensim_sg", "words_per_s"),
                                      ("tlx_cbow", "gensim_cbow", "words_per_s"),
                                      ("tlx_glove", "glove_python", "entries_per_s")):  # fmt: skip
        for name in (tlx_name, peer_name):
            r = by.get(name)
            if r is None or "error" in r or (name == peer_name and tlx_name.endswith("dense")):
                continue
            q = r["quality"]
            peer = by.get(peer_name, {})
            ratio = r[unit] / peer[unit] if name == tlx_name and unit in peer else None
            print(f"| {name} | {r[unit]:,.0f} {unit.replace('_per_s', '/s')} | "
                  f"{'' if ratio is None else f'{ratio:.2f}x'} | {q['wordsim353/spearman']:.3f} | "
                  f"{q['simlex999/spearman']:.3f} | {100 * q['analogy/semantic_accuracy']:.1f} / "
                  f"{100 * q['analogy/syntactic_accuracy']:.1f} / "
                  f"{100 * q['analogy/total_accuracy']:.1f}"
                  f" ({100 * q['analogy/coverage']:.1f}%) |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
