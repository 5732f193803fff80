"""Word-vector downstream models (tlx.models.word_encoders), transfer.init_vectors in tlx.train,
and configs/embeddings/classify.py: the three ways to transfer an embedding layer."""

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs.embeddings import classify
from data_pipelines import vocabularies
from tlx import checkpoint, models, objectives, optim, train, wordvec
from tlx.models import word_encoders

# Frequent words of SST-2 and CoNLL-2003 (so the small vocabulary gets hits in both) and "king".
WORDS = (
    "the a and of to is in it that film movie good bad not this with for as but its an be on "
    "one by all more his than like story so said at was he from has were after new king"
).split()
DIM = 6


@pytest.fixture
def run_dir(tmp_path) -> pathlib.Path:
    """A fake tlx word2vec run: words.txt (word<TAB>count) and vectors.txt (word2vec text)."""
    d = tmp_path / "w2v"
    d.mkdir()
    vectors = np.random.default_rng(0).normal(size=(len(WORDS), DIM)).astype(np.float32)
    (d / "words.txt").write_text("".join(f"{w}\t{1000 - i}\n" for i, w in enumerate(WORDS)))
    wordvec.save(wordvec.WordVectors(list(WORDS), vectors), d / "vectors.txt", "word2vec")
    return d


def _cfg(arg, **overrides):
    return sys.modules["tlx_tests_conftest"].config_with(classify, arg, **overrides)


def _table(workdir) -> np.ndarray:
    """embed/embedding of the run's final checkpoint."""
    mngr = ocp.CheckpointManager(
        str(pathlib.Path(workdir) / "checkpoints"),
        item_handlers={"params": ocp.StandardCheckpointHandler()},
    )
    args = ocp.args.Composite(params=ocp.args.StandardRestore())
    params = mngr.restore(mngr.latest_step(), args=args)["params"]
    mngr.close()
    return np.asarray(params["encoder"]["embed"]["embedding"])


# ---------------------------------------------------------------------------- models


def _batch(ids):
    ids = jnp.asarray(ids, jnp.int32)
    return {"input_ids": ids, "input_mask": (ids > 0).astype(jnp.int32)}


@pytest.mark.parametrize(
    "model,encoder,pool",
    [
        ("classifier", "bag", "max"),
        ("classifier", "cnn", "max"),
        ("classifier", "bilstm", "max"),
        ("classifier", "bilstm", "final"),
        ("tagger", "cnn", "max"),
        ("tagger", "bilstm", "max"),
    ],
)
def test_shapes_and_padding_never_reaches_the_logits(model, encoder, pool):
    cfg = word_encoders.WordEncoderConfig(
        vocab_size=30, embed_dim=8, encoder=encoder, hidden_size=7, filters=5, pool=pool
    )
    cls = word_encoders.classifier if model == "classifier" else word_encoders.tagger
    m = cls(cfg, num_classes=4)
    # Row lengths 6, 3 and 1 (shorter than every CNN width), then padding.
    ids = np.array([[2, 7, 8, 9, 10, 3, 0, 0], [2, 11, 3, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0, 0, 0]])
    params = m.init(jax.random.PRNGKey(0), _batch(ids))["params"]
    assert params["encoder"]["embed"]["embedding"].value.shape == (30, 8)
    assert params["encoder"]["embed"]["embedding"].names == ("vocab", "embed")
    out, inter = m.apply({"params": params}, _batch(ids))
    # Different ids under the padding, and five more padding positions.
    other = np.where(ids > 0, ids, 17)
    longer = np.concatenate([other, np.full((3, 5), 23)], 1)
    mask = np.concatenate([ids > 0, np.zeros((3, 5), bool)], 1)
    batch = {"input_ids": jnp.asarray(longer), "input_mask": jnp.asarray(mask, jnp.int32)}
    out2, _ = m.apply({"params": params}, batch)
    if model == "classifier":
        assert out["logits"].shape == (3, 4)
        assert inter["pooled"].ndim == 2
        np.testing.assert_allclose(out2["logits"], out["logits"], rtol=1e-5, atol=1e-6)
    else:
        assert out["logits"].shape == (3, 8, 4)
        assert inter["hidden_states"][-1].shape[:2] == (3, 8)
        real = ids > 0
        np.testing.assert_allclose(
            np.asarray(out2["logits"])[:, :8][real], np.asarray(out["logits"])[real], rtol=1e-5,
            atol=1e-6,
        )  # fmt: skip
    # ...while a real word does move them.
    changed = ids.copy()
    changed[1, 1] = 12
    out3, _ = m.apply({"params": params}, _batch(changed))
    assert not np.allclose(np.asarray(out3["logits"])[1], np.asarray(out["logits"])[1])


def test_tagger_needs_per_token_states():
    cfg = word_encoders.WordEncoderConfig(vocab_size=10, encoder="bag")
    with pytest.raises(ValueError, match="per-token"):
        word_encoders.tagger(cfg, 3).init(jax.random.PRNGKey(0), _batch([[2, 5, 3]]))
    with pytest.raises(ValueError, match="model.encoder='lstm'"):
        word_encoders.WordEncoderConfig(vocab_size=10, encoder="lstm")


def _train_steps(cfg, steps=3):
    """(table before, table after, classifier kernel before, after) over a few optimizer steps
    of the config's model and optimizer (the jitted loop is tested end to end below)."""
    model = models.build(cfg.model)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cfg.model.vocab_size, (8, 12)).astype(np.int32)
    ids[:, 6:] = 0
    batch = {**_batch(ids), "label": jnp.asarray(rng.integers(0, 2, (8,)), jnp.int32)}
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
    tx, _ = optim.make_optimizer(cfg.optim, params, steps)

    @jax.jit
    def step(params, opt_state, key):
        def loss(p):
            out, _ = model.apply({"params": p}, batch, train=True, rngs={"dropout": key})
            return objectives.classification(out, batch)[0]

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    start, opt_state = params, tx.init(params)
    for i in range(steps):
        params, opt_state = step(params, opt_state, jax.random.PRNGKey(i))
    get = lambda p: (
        np.array(p["encoder"]["embed"]["embedding"]),
        np.array(p["head"]["dense"]["kernel"]),
    )  # noqa: E731
    return (*get(start), *get(params))


def test_frozen_table_stays_bit_identical_while_finetune_trains_it(run_dir):
    tables = {}
    for mode in ("frozen", "finetune"):
        arg = f"task=sst2,mode={mode},init={run_dir},encoder=bag,runlocal"
        cfg = _cfg(arg, **{"model.vocab_size": 50})
        table0, head0, table1, head1 = _train_steps(cfg)
        assert not np.array_equal(head0, head1), mode  # the rest of the model trains either way
        tables[mode] = (table0, table1)
    np.testing.assert_array_equal(*tables["frozen"])
    changed = np.any(tables["finetune"][0] != tables["finetune"][1], axis=1)  # [V]
    assert changed.sum() > 10  # the batch's words moved


# ---------------------------------------------------------------------------- config


def test_modes_differ_only_in_init_and_freezing(run_dir):
    cfgs = {m: classify.get_config(f"task=trec,mode={m},init={run_dir}") for m in classify.MODES}

    def diff(a, b):
        fa, fb = checkpoint.flatten(a.to_dict()), checkpoint.flatten(b.to_dict())
        return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}

    assert diff(cfgs["scratch"], cfgs["frozen"]) == {"transfer/init_vectors", "optim/frozen/0"}
    assert diff(cfgs["frozen"], cfgs["finetune"]) == {"optim/frozen/0"}
    assert cfgs["scratch"].transfer.init_vectors == ""
    assert cfgs["finetune"].transfer.init_vectors == str(run_dir)
    assert cfgs["finetune"].data.vocab == f"words:{run_dir}/words.txt"
    assert cfgs["finetune"].model.embed_dim == DIM
    assert cfgs["finetune"].optim.weight_decay == 0.0  # AdamW would decay the vectors
    glove = classify.get_config("task=conll2003_ner,mode=finetune")
    assert (glove.data.vocab, glove.transfer.init_vectors, glove.model.embed_dim) == (
        "words:glove6b",
        "glove6b",
        50,
    )
    assert (glove.model.name, glove.model.encoder, glove.objective.name) == (
        "word_tagger",
        "bilstm",
        "tagging",
    )


def test_config_errors_name_the_culprit(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match="vectors.txt"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "words.txt").write_text("the\t3\n")
        classify.get_config(f"task=sst2,init={tmp_path / 'half'}")
    with pytest.raises(KeyError, match="encoder='bag'"):
        classify.get_config(f"task=conll2003_ner,encoder=bag,init={run_dir}")
    with pytest.raises(KeyError, match="mode must be"):
        classify.get_config(f"task=sst2,mode=static,init={run_dir}")


# ---------------------------------------------------------------------------- end to end


def test_frozen_sentence_run_keeps_the_vectors_at_their_rows(run_dir, tmp_path, capsys):
    cfg = _cfg(f"task=sst2,mode=frozen,init={run_dir},runlocal")
    final = train.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert 0.0 <= final["best/accuracy"] <= 1.0 and np.isfinite(final["eval/loss"])
    n = len(WORDS) + 5
    assert f"initialised encoder/embed/embedding from {run_dir}: {len(WORDS)} / {n} words" in (
        capsys.readouterr().out
    )
    table = _table(tmp_path / "run")  # frozen: still exactly the placed vectors
    vocab = vocabularies.get_vocabulary(cfg.data.vocab)
    vectors = wordvec.load_source(run_dir)
    for word in ("king", "the", "movie"):
        np.testing.assert_array_equal(table[vocab.token_to_id(word)], vectors.get(word))
    placed, _ = wordvec.embedding_matrix(vectors, vocab.tokens)  # its random rows are seeded
    np.testing.assert_array_equal(table, placed)
    np.testing.assert_array_equal(table[0], np.zeros(DIM))  # [PAD]


def test_finetune_tagging_run_moves_the_vectors(run_dir, tmp_path):
    cfg = _cfg(f"task=conll2003_ner,mode=finetune,init={run_dir},encoder=cnn,runlocal")
    final = train.train_and_evaluate(cfg, str(tmp_path / "run"))
    for metric in ("precision", "recall", "f1", "token_accuracy"):
        assert 0.0 <= final[f"eval/{metric}"] <= 1.0, (metric, final)
    table = _table(tmp_path / "run")
    vocab = vocabularies.get_vocabulary(cfg.data.vocab)
    start, _ = wordvec.embedding_matrix(wordvec.load_source(run_dir), vocab.tokens)
    the = vocab.token_to_id("the")
    assert not np.array_equal(table[the], start[the])  # trained from the placed vector...
    np.testing.assert_allclose(table[the], start[the], atol=0.05)  # ...4 small steps away


def test_init_vectors_shape_or_name_mismatch_fails_naming_the_param(run_dir, tmp_path):
    cfg = _cfg(f"task=trec,mode=frozen,init={run_dir},runlocal", **{"model.embed_dim": DIM + 2})
    v = len(WORDS) + 5
    with pytest.raises(
        checkpoint.TransferError, match=rf"embed/embedding.*\({v}, 8\) != \({v}, 6\)"
    ):
        train.train_and_evaluate(cfg, str(tmp_path / "a"))
    cfg = _cfg(f"task=trec,mode=frozen,init={run_dir},runlocal")
    cfg.transfer.vectors_param = "embed/embedding"  # the path before tlx.models.compose
    cfg.optim.frozen = []
    with pytest.raises(
        checkpoint.TransferError, match="'embed/embedding' is not.*encoder/embed/embedding"
    ):
        train.train_and_evaluate(cfg, str(tmp_path / "b"))


def test_glove6b_vocabulary_rows_are_glove6b_vectors():
    tokens = vocabularies.id_to_token(vocabularies.get_vocabulary("words:glove6b"))
    glove = wordvec.load_source("glove6b")
    matrix, hits = wordvec.embedding_matrix(glove, tokens)
    assert matrix.shape == (400_005, 50) and hits == 400_000
    for word in ("king", "the", "zurich"):
        np.testing.assert_array_equal(matrix[tokens.index(word)], glove.get(word))
    np.testing.assert_array_equal(matrix[0], np.zeros(50))  # [PAD]
