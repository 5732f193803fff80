"""word2vec and GloVe models, their objectives and the row-sparse optimizers.

The sparse step must be the dense step computed differently: one SGD step through
tlx.sparse equals optax.sgd on the dense gradient (repeated rows included), and sparse AdaGrad
matches a numpy transcription of its per-occurrence rule.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tlx import objectives, sparse
from tlx.models import embeddings

V, D, W, K, C, B = 50, 8, 2, 3, 6, 2


@flax.struct.dataclass
class State:
    step: jnp.ndarray
    params: dict
    opt_state: dict
    rng: jnp.ndarray


def w2v_batch(seed=0, sentence_len=4):
    rng = np.random.default_rng(seed)
    sent = (np.arange(B * (C + 2 * W)).reshape(B, -1) // sentence_len).astype(np.int32)
    sent[0, :W] = -1  # padding before the corpus starts
    return {
        "tokens": rng.integers(0, V, (B, C + 2 * W)).astype(np.int32),
        "sentence": sent,
        "window": rng.integers(1, W + 1, (B, C)).astype(np.int32),
        "negatives": rng.integers(0, V, (B, C, K)).astype(np.int32),
    }


def reference_pairs(batch):
    """(b, centre position, context position) of every real pair, by enumeration."""
    pairs = set()
    for b in range(B):
        for c in range(C):
            p = c + W
            for q in range(p - W, p + W + 1):
                same = batch["sentence"][b, q] == batch["sentence"][b, p]
                if q != p and abs(q - p) <= batch["window"][b, c] and same:
                    if batch["sentence"][b, p] >= 0:
                        pairs.add((b, c, q))
    return pairs


def init(model, batch, seed=0):
    params = nn.unbox(model.init(jax.random.PRNGKey(seed), batch)["params"])
    # Non-zero output vectors so every gradient is non-trivial.
    return {
        k: v + 0.1 * jax.random.normal(jax.random.PRNGKey(9), v.shape) for k, v in params.items()
    }


def test_context_mask_matches_enumerated_pairs():
    batch = w2v_batch()
    offsets, mask = embeddings.context_mask(jax.tree.map(jnp.asarray, batch), W)
    got = {
        (b, c, c + W + offsets[o]) for b, c, o in zip(*np.nonzero(np.asarray(mask)), strict=True)
    }
    assert got == reference_pairs(batch)
    assert len(got) > 10


@pytest.mark.parametrize("arch", ["sg", "cbow"])
def test_logits_are_the_dot_products_they_claim(arch):
    batch = w2v_batch()
    model = embeddings.Word2Vec(V, D, arch, W)
    p = init(model, batch)
    out, _ = model.apply({"params": p}, batch)
    vin, vout = np.asarray(p["input"]), np.asarray(p["output"])
    t, neg = batch["tokens"], batch["negatives"]
    pairs = sorted(reference_pairs(batch))
    if arch == "sg":  # the context word's input vector scores the centre and its noise
        offsets = [o for o in range(-W, W + 1) if o]
        for b, c, q in pairs[:20]:
            o = offsets.index(q - c - W)
            u = vin[t[b, q]]
            np.testing.assert_allclose(
                out["pos_logits"][b, c, o], u @ vout[t[b, c + W]], rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                out["neg_logits"][b, c, o], vout[neg[b, c]] @ u, rtol=1e-5, atol=1e-6
            )
    else:
        ctx = [q for b, c, q in pairs if (b, c) == (1, 3)]
        h = vin[t[1, ctx]].mean(0)
        np.testing.assert_allclose(out["pos_logits"][1, 3, 0], h @ vout[t[1, 3 + W]], rtol=1e-5)
        np.testing.assert_allclose(
            out["neg_logits"][1, 3], vout[neg[1, 3]] @ h, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("arch", ["sg", "cbow"])
def test_sparse_sgd_step_equals_dense_sgd(arch):
    batch = w2v_batch(1)
    model = embeddings.Word2Vec(V, D, arch, W)
    params = init(model, batch)
    lr = 0.05
    opt = sparse.SparseOptimizer("sparse_sgd", lambda step: lr)
    step = jax.jit(sparse.make_train_step(model, objectives.sgns, opt))
    state = State(jnp.zeros([], jnp.int32), params, opt.init(params), jax.random.PRNGKey(0))
    new, metrics = step(state, batch)

    def loss(p):
        return objectives.sgns(model.apply({"params": p}, batch)[0], batch)[0]

    grads = jax.grad(loss)(params)
    if arch == "cbow":  # word2vec's CBOW hands each context word the full error: not a gradient
        assert not np.allclose(np.asarray(grads["input"]), 0)
    sgd = optax.sgd(lr)
    want = optax.apply_updates(params, sgd.update(grads, sgd.init(params))[0])
    for name in ("input", "output"):
        np.testing.assert_allclose(new.params[name], want[name], rtol=1e-5, atol=1e-6)
        assert not np.allclose(new.params[name], params[name])
    assert int(new.step) == 1 and metrics["pairs_per_step"][0] > 0


def test_sgns_loss_is_a_per_pair_sum():
    batch = w2v_batch(2)
    model = embeddings.Word2Vec(V, D, "sg", W)
    p = init(model, batch)
    out, _ = model.apply({"params": p}, batch)
    loss, m = objectives.sgns(out, batch)
    pairs = reference_pairs(batch)
    sp = lambda x: np.log1p(np.exp(x))
    vin, vout, t = np.asarray(p["input"]), np.asarray(p["output"]), batch["tokens"]
    want = 0.0
    for b, c, q in pairs:
        u = vin[t[b, q]]
        want += sp(-(u @ vout[t[b, c + W]])) + sp(vout[batch["negatives"][b, c]] @ u).sum()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert m["loss"][1] == len(pairs)


def test_duplicate_rows_mean_and_sqrt_scale_the_summed_update():
    table = {"t": jnp.zeros((4, 2))}
    idx = {"t": jnp.array([1, 1, 1, 1, 2])}
    grads = {"t": jnp.ones((5, 2))}
    for rule, row1 in (("sum", -4.0), ("mean", -1.0), ("sqrt", -2.0)):
        opt = sparse.SparseOptimizer("sparse_sgd", lambda s: 1.0, duplicates=rule)
        new, _ = opt.apply(0, table, opt.init(table), idx, grads)
        np.testing.assert_allclose(new["t"][:, 0], [0.0, row1, -1.0, 0.0], err_msg=rule)


def test_glove_adagrad_matches_numpy_rule():
    rng = np.random.default_rng(0)
    e = 7
    batch = {
        "row": rng.integers(0, V, (1, e)).astype(np.int32),
        "col": rng.integers(0, V, (1, e)).astype(np.int32),
        "log_count": rng.normal(size=(1, e)).astype(np.float32),
        "weight": np.array([[1.0, 0.5, 0.2, 1.0, 0.0, 0.9, 0.3]], np.float32),
    }
    batch["row"][0, 1] = batch["row"][0, 0]  # a repeated row
    model = embeddings.GloVe(V, D)
    p = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
    lr = 0.05
    opt = sparse.SparseOptimizer("sparse_adagrad", lambda s: lr, initial_accumulator=1.0)
    state = State(jnp.zeros([], jnp.int32), p, opt.init(p), jax.random.PRNGKey(0))
    new, m = jax.jit(sparse.make_train_step(model, objectives.glove, opt))(state, batch)

    w, wc, b, bc = (np.array(p[k], np.float64) for k in ("w", "w_ctx", "b", "b_ctx"))
    acc = {k: np.ones_like(v) for k, v in (("w", w), ("w_ctx", wc), ("b", b), ("b_ctx", bc))}
    upd = {k: np.zeros_like(v) for k, v in acc.items()}
    loss = 0.0
    for i, j, logx, f in zip(
        batch["row"][0], batch["col"][0], batch["log_count"][0], batch["weight"][0]
    ):
        diff = w[i] @ wc[j] + b[i] + bc[j] - logx
        loss += 0.5 * f * diff**2
        for name, r, g in (("w", i, f * diff * wc[j]), ("w_ctx", j, f * diff * w[i]),
                           ("b", i, f * diff), ("b_ctx", j, f * diff)):  # fmt: skip
            upd[name][r] -= lr * g / np.sqrt(acc[name][r])
    for i, j, logx, f in zip(
        batch["row"][0], batch["col"][0], batch["log_count"][0], batch["weight"][0]
    ):
        diff = w[i] @ wc[j] + b[i] + bc[j] - logx
        for name, r, g in (("w", i, f * diff * wc[j]), ("w_ctx", j, f * diff * w[i]),
                           ("b", i, f * diff), ("b_ctx", j, f * diff)):  # fmt: skip
            acc[name][r] = acc[name][r] + g**2
    np.testing.assert_allclose(m["loss"][0], loss, rtol=1e-5)
    assert m["loss"][1] == 6  # the zero-weight entry is padding
    for name, start in (("w", w), ("w_ctx", wc), ("b", b), ("b_ctx", bc)):
        np.testing.assert_allclose(new.params[name], start + upd[name], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(new.opt_state[name], acc[name], rtol=1e-5)
    vectors = model.apply({"params": new.params}, method="word_vectors")
    np.testing.assert_allclose(vectors, new.params["w"] + new.params["w_ctx"])


def test_tables_carry_vocab_axis_names_and_shard_over_the_mesh():
    from tlx import partitioning

    batch = w2v_batch()
    boxed = jax.eval_shape(
        lambda: embeddings.Word2Vec(64, D, "sg", W).init(jax.random.PRNGKey(0), batch)
    )
    mesh = partitioning.make_mesh({"data": 2, "model": 4})
    shardings = partitioning.param_shardings(boxed["params"], mesh, partitioning.DEFAULT_RULES)
    for name in ("input", "output"):
        assert shardings[name].spec == jax.sharding.PartitionSpec("model", None)


def test_window_mismatch_between_data_and_model_fails_loudly():
    batch = w2v_batch()
    with pytest.raises(ValueError, match="window"):
        embeddings.Word2Vec(V, D, "sg", W + 1).init(jax.random.PRNGKey(0), batch)


G, S = 3, 2  # the per-group formulation: G centres share S draws of K noise words


def grouped_batch(seed=0):
    batch = w2v_batch(seed)
    del batch["negatives"]
    rng = np.random.default_rng(seed + 100)
    batch["group_negatives"] = rng.integers(0, V, (B, C // G, S, K)).astype(np.int32)
    return batch


def test_grouped_loss_and_gradient_match_a_float64_reference():
    """Loss and dense table gradients of the per-group objective against a float64 numpy
    transcription: pair (c, q) scores its centre and the S K noise words of c's group, the
    noise terms weighted 1/S."""
    batch = grouped_batch(3)
    model = embeddings.Word2Vec(V, D, "sg", W)
    p = init(model, batch)

    def loss(params):
        return objectives.sgns(model.apply({"params": params}, batch)[0], batch)[0]

    got_loss, got = jax.value_and_grad(loss)(p)
    vin, vout = np.asarray(p["input"], np.float64), np.asarray(p["output"], np.float64)
    t, noise = batch["tokens"], batch["group_negatives"]
    sig = lambda x: 1 / (1 + np.exp(-x))
    want_loss, gin, gout = 0.0, np.zeros_like(vin), np.zeros_like(vout)
    for b, c, q in reference_pairs(batch):
        u, centre = vin[t[b, q]], t[b, c + W]
        x = u @ vout[centre]
        want_loss += np.log1p(np.exp(-x))
        gin[t[b, q]] -= sig(-x) * vout[centre]
        gout[centre] -= sig(-x) * u
        for n in noise[b, c // G].reshape(-1):
            y = u @ vout[n]
            want_loss += np.log1p(np.exp(y)) / S
            gin[t[b, q]] += sig(y) * vout[n] / S
            gout[n] += sig(y) * u / S
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(got["input"], gin, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["output"], gout, rtol=1e-4, atol=1e-6)
    assert np.abs(gout).sum() > 0 and np.abs(gin).sum() > 0


def test_grouped_cbow_scores_the_group_noise_with_the_context_mean():
    batch = grouped_batch(4)
    model = embeddings.Word2Vec(V, D, "cbow", W)
    p = init(model, batch)
    out, _ = model.apply({"params": p}, batch)
    vin, vout, t = np.asarray(p["input"]), np.asarray(p["output"]), batch["tokens"]
    ctx = [q for b, c, q in sorted(reference_pairs(batch)) if (b, c) == (1, 4)]
    h = vin[t[1, ctx]].mean(0)
    noise = batch["group_negatives"][1, 4 // G].reshape(-1)
    np.testing.assert_allclose(out["neg_logits"][1, 4 // G, 4 % G], vout[noise] @ h, rtol=1e-5)
    np.testing.assert_allclose(out["neg_weight"][1, 4 // G, 4 % G], 1 / S)


def test_grouped_sparse_training_lowers_the_loss():
    batch = grouped_batch(5)
    model = embeddings.Word2Vec(V, D, "sg", W)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
    opt = sparse.SparseOptimizer("sparse_sgd", lambda step: 0.5)
    step = jax.jit(sparse.make_train_step(model, objectives.sgns, opt))
    state = State(jnp.zeros([], jnp.int32), params, opt.init(params), jax.random.PRNGKey(0))
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(float(m["loss"][0] / m["loss"][1]))
    assert losses[-1] < 0.7 * losses[0], losses


def test_bfloat16_compute_keeps_float32_tables_and_logits():
    batch = grouped_batch()
    model = embeddings.Word2Vec(V, D, "sg", W, dtype="bfloat16")
    p = init(model, batch)
    assert all(v.dtype == jnp.float32 for v in p.values())
    out, _ = model.apply({"params": p}, batch)
    ref, _ = embeddings.Word2Vec(V, D, "sg", W).apply({"params": p}, batch)
    assert out["neg_logits"].dtype == jnp.float32
    np.testing.assert_allclose(out["neg_logits"], ref["neg_logits"], atol=0.05)
    assert not np.array_equal(out["neg_logits"], ref["neg_logits"])


@pytest.mark.parametrize("n,g,span", [(522, 8, 18), (522, 32, 42), (74, 64, 74), (20, 8, 8)])
def test_windows_equal_the_gather_and_its_gradient(n, g, span):
    u = jnp.asarray(np.random.default_rng(0).normal(size=(2, n, 3)), jnp.float32)
    nb = (n - span + g) // g
    window = np.arange(nb)[:, None] * g + np.arange(span)[None]
    np.testing.assert_array_equal(embeddings._windows(u, g, span), u[:, window])
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, nb, span, 3)), jnp.float32)
    grad = jax.grad(lambda x: (embeddings._windows(x, g, span) * weights).sum())(u)
    want = jax.grad(lambda x: (x[:, window] * weights).sum())(u)
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-6)  # sums of <= 3 equal terms
