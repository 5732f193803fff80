"""ELMo: parameter tree and full-size counts, the directions' blindness to their future,
padding invariance, the biLM targets, the sampled softmax against the full one, a short
overfit, and the scalar mix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tlx import objectives, partitioning
from tlx.layers.scalar_mix import ScalarMix
from tlx.models import elmo
from tlx.optim import path_str

VOCAB = 40
P = 16  # tiny projection_dim


def _cfg(**kw):
    return elmo.config_for_size("tiny", vocab_size=VOCAB, dropout_rate=0.0, **kw)


def _char_table(vocab=VOCAB, seed=0):
    """[V, 50] ELMo-style char ids of made-up words: BOW, 1-8 random bytes, EOW, zeros."""
    rng = np.random.default_rng(seed)
    table = np.zeros((vocab, 50), np.int32)
    for v in range(1, vocab):
        n = rng.integers(1, 9)
        table[v, : n + 2] = [257, *rng.integers(1, 257, n), 258]
    return table


TABLE = _char_table()


def _batch(ids, mask=None):
    ids = np.asarray(ids, np.int32)
    mask = np.ones_like(ids) if mask is None else np.asarray(mask, np.int32)
    return {"input_ids": ids, "input_mask": mask, "char_ids": TABLE[ids]}


def _rand_ids(b, length, seed):
    return np.random.default_rng(seed).integers(5, VOCAB, (b, length))


def _init(model, batch):
    # unsafe_rbg: on a CPU, compiling threefry for ~35 initialisers takes 3x as long
    return nn.unbox(jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), batch)["params"])


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def tiny():
    model = elmo.ElmoLM(_cfg())
    params = _init(model, _batch(_rand_ids(2, 10, 0)))

    @jax.jit
    def run(p, batch):  # evaluation: states and the full-softmax biLM loss
        outputs, inter = model.apply({"params": p}, batch)
        return outputs, inter, *objectives.bilm(outputs, batch)

    return model, params, run


def test_config_validation():
    cfg = _cfg()
    assert (cfg.projection_dim, cfg.lstm_dim, cfg.char_dim) == (16, 32, 4)
    small = elmo.config_for_size("small", vocab_size=10)
    assert (small.projection_dim, small.lstm_dim, sum(n for _, n in small.filters)) == (
        128,
        512,
        256,
    )
    with pytest.raises(ValueError, match="model.softmax='adaptive'"):
        _cfg(softmax="adaptive")
    with pytest.raises(ValueError, match="model.num_samples"):
        _cfg(num_samples=0)
    with pytest.raises(ValueError, match="model.vocab_size"):
        elmo.config_for_size("tiny")
    with pytest.raises(ValueError, match="'huge'"):
        elmo.config_for_size("huge", vocab_size=10)


def test_parameter_paths_and_shardings(tiny):
    model, params, _ = tiny
    boxed = jax.eval_shape(lambda r: model.init(r, _batch(_rand_ids(1, 4, 0))), jax.random.key(0))
    shapes = {path_str(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(nn.unbox(boxed))}
    for direction in ("forward", "backward"):
        for k in (0, 1):
            cell = f"params/bilm/bilstm/{direction}/layer_{k}/cell"
            assert shapes[f"{cell}/input_kernel/kernel"] == (P, 128)
            assert shapes[f"{cell}/recurrent_kernel"] == (P, 128)
            assert shapes[f"{cell}/projection"] == (32, P)
    cnn = "params/bilm/char_cnn"
    assert shapes[f"{cnn}/char_embedding"] == (261, 4)
    assert shapes[f"{cnn}/conv_3/kernel"] == (3, 4, 8)
    assert shapes[f"{cnn}/highway_1/gate/kernel"] == (16, 16)
    assert shapes[f"{cnn}/projection/kernel"] == (16, P)
    assert shapes["params/softmax/embedding"] == (VOCAB, P)
    assert shapes["params/softmax/bias"] == (VOCAB,)
    assert len(shapes) == 4 * 4 + 1 + 3 * 2 + 2 * 4 + 2 + 2
    # model=2: the char table (unknown 'char_vocab') replicates, the word softmax splits.
    mesh = partitioning.make_mesh({"data": -1, "model": 2})
    sh = partitioning.param_shardings(boxed["params"], mesh, partitioning.DEFAULT_RULES)
    assert sh["bilm"]["char_cnn"]["char_embedding"].spec == jax.sharding.PartitionSpec(None, None)
    assert sh["softmax"]["embedding"].spec[0] == "model"
    np.testing.assert_array_equal(params["bilm"]["char_cnn"]["highway_0"]["gate"]["bias"], -2.0)


def test_full_size_parameter_counts():
    """The released 2x4096_512_2048cnn_2xhighway biLM: 93.6M parameters without the softmax."""
    cfg = elmo.config_for_size("full", vocab_size=793_471)  # the paper's 1B Word vocabulary
    batch = {"char_ids": jnp.zeros((1, 4, 50), jnp.int32), "input_ids": jnp.zeros((1, 4), int)}
    shapes = jax.eval_shape(lambda r: elmo.ElmoLM(cfg).init(r, batch), jax.random.key(0))
    params = nn.unbox(shapes)["params"]
    h, p, f = 4096, 512, 2048
    per_cell = 4 * h * (p + p) + 4 * h + h * p  # input + recurrent kernels, bias, projection
    assert _count(params["bilm"]["bilstm"]) == 2 * 2 * per_cell == 75_563_008
    convs = sum(w * 16 * n + n for w, n in cfg.filters)
    char_cnn = 261 * 16 + convs + 2 * 2 * (f * f + f) + f * p + p
    assert _count(params["bilm"]["char_cnn"]) == char_cnn == 18_037_840
    assert _count(params["bilm"]) == 93_600_848
    assert _count(params["softmax"]) == 793_471 * (p + 1)
    print(f"ELMo full: biLM {_count(params['bilm']):,} + softmax {_count(params['softmax']):,}")


def _directions(run, params, batch):
    """Every forward and backward state, [2 layers + top, B, L, P] each."""
    out, inter, _, _ = run(params, batch)
    layers = inter["hidden_states"][1:]
    fw = np.stack([h[..., :P] for h in layers] + [out["forward_hidden"]])
    bw = np.stack([h[..., P:] for h in layers] + [out["backward_hidden"]])
    return fw, bw


def _changed(a, b) -> bool:
    """Every (layer, row, position) state differs somewhere, by far more than the tolerance."""
    return bool((np.abs(a - b).max(-1) > 1e-5).all())


def test_no_future_leakage(tiny):
    _, params, run = tiny
    ids, t = _rand_ids(2, 10, 1), 4
    fw, bw = _directions(run, params, _batch(ids))
    later = ids.copy()
    later[:, t + 1 :] = _rand_ids(2, 10 - t - 1, 2)
    fw2, bw2 = _directions(run, params, _batch(later))
    np.testing.assert_allclose(fw2[:, :, : t + 1], fw[:, :, : t + 1], rtol=0, atol=1e-7)
    assert _changed(bw2[:, :, : t + 1], bw[:, :, : t + 1])  # the edit does reach them
    earlier = ids.copy()
    earlier[:, :t] = _rand_ids(2, t, 3)
    fw3, bw3 = _directions(run, params, _batch(earlier))
    np.testing.assert_allclose(bw3[:, :, t:], bw[:, :, t:], rtol=0, atol=1e-7)
    assert _changed(fw3[:, :, t:], fw[:, :, t:])


def test_padding_invariance(tiny):
    """States and loss do not depend on what or how much padding follows a row."""
    _, params, run = tiny
    ids = _rand_ids(2, 10, 4)
    short = _batch(ids, [[1] * 10, [1] * 6 + [0] * 4])  # garbage ids under the mask
    long = _batch(
        np.concatenate([ids, _rand_ids(2, 4, 5)], 1), np.pad(short["input_mask"], ((0, 0), (0, 4)))
    )
    (_, inter_s, loss_s, _), (_, inter_l, loss_l, _) = run(params, short), run(params, long)
    real = short["input_mask"].astype(bool)
    for hs, hl in zip(inter_s["hidden_states"], inter_l["hidden_states"], strict=True):
        hs, hl = np.asarray(hs), np.asarray(hl)
        np.testing.assert_allclose(hl[:, :10][real], hs[real], atol=1e-6)
        assert not hs[~real].any() and not hl[:, :10][~real].any() and not hl[:, 10:].any()
    np.testing.assert_allclose(loss_l, loss_s, rtol=1e-6)


def test_targets_stay_in_document():
    ids = jnp.array([[11, 12, 13, 21, 22, 0], [31, 32, 33, 34, 35, 36]])
    docs = jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
    batch = {"input_ids": ids, "document_ids": docs, "example_weight": jnp.array([1.0, 0.5])}
    t, w = objectives.next_token_targets(batch)
    assert w[0].tolist() == [1, 1, 0, 1, 0, 0] and (t * (w > 0))[0].tolist() == [
        12,
        13,
        0,
        22,
        0,
        0,
    ]
    assert t[1, :5].tolist() == [32, 33, 34, 35, 36] and w[1].tolist() == [0.5] * 5 + [0]
    t, w = objectives.previous_token_targets(batch)
    assert w[0].tolist() == [0, 1, 1, 0, 1, 0] and (t * (w > 0))[0].tolist() == [
        0,
        11,
        12,
        0,
        21,
        0,
    ]
    assert t[1].tolist() == [0, 31, 32, 33, 34, 35] and w[1].tolist() == [0] + [0.5] * 5


def _full_xent(h, emb, bias, targets):
    logits = h @ emb.T + bias
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


@jax.jit
def _sampled_vs_full(key):
    """(sampled loss, full loss, cosine of their gradients in h, p(target), samples) on
    random logits over 300 words where the even positions are confident."""
    v, b, length, d = 300, 4, 16, 16
    keys = jax.random.split(key, 5)
    emb = 1.5 * jax.random.normal(keys[0], (v, d)) / d**0.5
    bias = 0.5 * jax.random.normal(keys[1], (v,))
    targets = jax.random.randint(keys[2], (b, length), 0, v)
    confident = (jnp.arange(length) % 2 == 0)[None, :, None]
    h = jax.random.normal(keys[3], (b, length, d)) + confident * 0.4 * d / 1.5 * emb[targets]
    weights = jnp.ones((b, length))
    samples = elmo.sample_log_uniform(keys[4], v, 100_000)

    def sampled(h):
        return objectives.sampled_xent(h, emb, bias, targets, weights, samples) / weights.sum()

    def full(h):
        return _full_xent(h, emb, bias, targets).mean()

    g_s, g_f = jax.grad(sampled)(h).ravel(), jax.grad(full)(h).ravel()
    cos = jnp.dot(g_s, g_f) / (jnp.linalg.norm(g_s) * jnp.linalg.norm(g_f))
    p_target = jnp.exp(-_full_xent(h, emb, bias, targets))
    return sampled(h), full(h), cos, p_target, samples


def test_sampled_softmax_tracks_full():
    """With many samples the sampled loss and its gradient approach the full softmax's. Half
    the positions are confident (median p(target) ~ 0.45), so keeping accidental hits (+0.2
    here) or also correcting the true logit by log K Q(t) as TF does (+4.5) misses by far more
    than the tolerance."""
    sampled, full, cos, p_target, samples = _sampled_vs_full(jax.random.key(0, impl="unsafe_rbg"))
    assert np.median(p_target[:, ::2]) > 0.3 and np.median(p_target[:, 1::2]) < 0.05
    np.testing.assert_allclose(sampled, full, atol=0.03)
    assert cos > 0.99
    samples, v = np.asarray(samples), 300
    assert samples.min() >= 0 and samples.max() < v
    q = np.exp(np.asarray(objectives.log_uniform_log_prob(jnp.arange(v), v)))
    np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        np.bincount(samples, minlength=v)[:5] / samples.size, q[:5], rtol=0.05
    )


def test_sampled_training_overfits_one_batch(tiny):
    """50 Adam steps on one batch with the sampled softmax (64 draws over 40 words) lower both
    directions' full-softmax loss by more than half; evaluation draws no samples."""
    model, params, run = tiny
    batch = _batch(_rand_ids(2, 10, 6))  # the fixture's shapes: `run` is already compiled
    sampled = elmo.ElmoLM(_cfg(softmax="sampled", num_samples=64))
    tx = optax.adam(3e-2)

    @jax.jit
    def step(p, opt, rng):
        def loss_fn(p):
            outputs, _ = sampled.apply({"params": p}, batch, train=True, rngs={"dropout": rng})
            assert outputs["sampled_ids"].shape == (64,)
            return objectives.bilm(outputs, batch)[0]

        updates, opt = tx.update(jax.grad(loss_fn)(p), opt, p)
        return optax.apply_updates(p, updates), opt

    def losses(p):
        outputs, _, _, metrics = run(p, batch)
        assert "sampled_ids" not in outputs
        return {
            k: metrics[f"{k}_loss"][0] / metrics[f"{k}_loss"][1] for k in ("forward", "backward")
        }

    before, opt = losses(params), tx.init(params)
    for i in range(50):
        params, opt = step(params, opt, jax.random.key(i, impl="unsafe_rbg"))
    after = losses(params)
    for k in ("forward", "backward"):
        assert after[k] < 0.5 * before[k], (k, before[k], after[k])


def test_scalar_mix():
    layers = list(np.random.default_rng(0).normal(size=(3, 2, 5, 6)).astype(np.float32))
    mix = ScalarMix(3, l2_coef=0.1)
    params = mix.init(jax.random.key(0), layers)["params"]
    out, penalty = mix.apply({"params": params}, layers)
    # Both sides round softmax weights, 3 products and 2 sums in float32: 8 ulps of the magnitude.
    ulps8 = lambda ref: 8 * np.finfo(np.float32).eps * float(np.abs(ref).max())  # noqa: E731
    mean = sum(layers) / 3  # w = 0, gamma = 1: the mean
    np.testing.assert_allclose(out, mean, rtol=0, atol=ulps8(mean))
    assert penalty == 0.0
    s = jnp.array([0.1, -0.3, 0.5])
    params = {"scalars": s, "gamma": jnp.array(2.0)}
    out, penalty = mix.apply({"params": params}, layers)
    w = np.exp(s) / np.exp(s).sum()
    mixed = 2.0 * sum(wk * h for wk, h in zip(w, layers))
    np.testing.assert_allclose(out, mixed, rtol=0, atol=ulps8(mixed))
    np.testing.assert_allclose(penalty, 0.1 * (0.01 + 0.09 + 0.25), rtol=1e-6)
    # layer norm: one mean / variance per layer over the unmasked positions and features
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out, _ = ScalarMix(3, do_layer_norm=True).apply({"params": params}, layers, mask)
    normed = []
    for h in layers:
        real = np.asarray(h)[np.asarray(mask, bool)]
        normed.append((h - real.mean()) / real.std())
    np.testing.assert_allclose(out, 2.0 * sum(wk * h for wk, h in zip(w, normed)), atol=1e-5)
