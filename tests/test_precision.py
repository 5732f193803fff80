"""The precision policy (tlx.precision): config validation and metadata, the float32 policy is
the plain path bit for bit, a bfloat16 step keeps its float32 islands (softmax, LayerNorm
statistics, log-softmax) and float32 parameters, and 50 bfloat16 steps of a tiny BERT / GPT end
near float32's loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tlx import models, objectives, precision
from tlx.errors import ConfigError

SHAPE = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}
V = 64


def _section(name, **kw):
    base = {"name": name, "size": "custom", "vocab_size": V, "max_position": 32, **SHAPE}
    return ml_collections.ConfigDict({**base, **kw})


def _batch(name, seed, b=4, length=16):
    """A learnable stream: each token is 3 x the previous + 1 (mod V) 70% of the time."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((b, length), np.int32)
    ids[:, 0] = rng.integers(1, V, b)
    for t in range(1, length):
        noise = rng.integers(1, V, b)
        ids[:, t] = np.where(rng.random(b) < 0.7, (3 * ids[:, t - 1] + 1) % V, noise)
    out = {"input_ids": jnp.asarray(ids), "input_mask": jnp.ones((b, length), jnp.int32)}
    if name == "bert_pretrain":
        pos = np.stack([rng.choice(length, 3, replace=False) for _ in range(b)]).astype(np.int32)
        out.update(
            segment_ids=jnp.zeros((b, length), jnp.int32),
            masked_lm_positions=jnp.asarray(pos),
            masked_lm_ids=jnp.asarray(np.take_along_axis(ids, pos, 1)),
            masked_lm_weights=jnp.ones((b, 3)),
            next_sentence_labels=jnp.asarray(rng.integers(0, 2, (b, 1)), jnp.int32),
        )
    return out


OBJECTIVE = {"bert_pretrain": objectives.mlm_nsp, "gpt_lm": objectives.causal_lm}


def _trainer(section, lr=3e-3):
    model, objective = models.build(section), OBJECTIVE[section.name]
    tx = optax.adam(lr)

    def loss_fn(params, batch):
        outputs, _ = model.apply({"params": params}, batch, train=False)
        return objective(outputs, batch)[0]

    @jax.jit
    def step(params, opt, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    def init(batch):
        params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
        return params, tx.init(params)

    return init, step, loss_fn


def test_config_validation_and_metadata():
    with pytest.raises(ConfigError, match=r"model.dtype='float16'.*bfloat16"):
        models.build(_section("bert_pretrain", dtype="float16"))
    with pytest.raises(ConfigError, match="model.param_dtype='fp32'"):
        models.build(_section("gpt_lm", param_dtype="fp32"))
    with pytest.raises(ConfigError, match="model.remat='full': model 'word_classifier'"):
        models.build(ml_collections.ConfigDict({"name": "word_classifier", "remat": "full"}))
    assert precision.describe({"dtype": "bfloat16"}) == {
        "dtype": "bfloat16", "param_dtype": "float32", "remat": "none",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["bert_pretrain", "gpt_lm"])
def test_float32_policy_is_the_plain_path_bit_for_bit(name):
    """A section naming the float32 policy trains exactly as one without the keys (a config
    from before them), and its step holds no bfloat16 value at all."""
    batch = _batch(name, 0)
    results = []
    for section in (_section(name), _section(name, dtype="float32", param_dtype="float32",
                                              remat="none")):  # fmt: skip
        init, step, loss_fn = _trainer(section)
        params, opt = init(batch)
        params, opt, loss = step(params, opt, batch)
        results.append((params, loss))
    assert "bf16" not in str(jax.make_jaxpr(jax.grad(loss_fn))(params, batch))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0]), strict=True):
        np.testing.assert_array_equal(a, b)


def _equations(jaxpr):
    """Every equation of a closed jaxpr, sub-jaxprs (pjit, remat, scan, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _equations(sub)


@pytest.mark.parametrize("name", ["bert_pretrain", "gpt_lm"])
def test_bfloat16_step_keeps_float32_islands(name):
    batch = _batch(name, 0)
    init, step, loss_fn = _trainer(_section(name, dtype="bfloat16"))
    params, opt = init(batch)
    jaxpr = jax.make_jaxpr(jax.grad(loss_fn))(params, batch).jaxpr
    eqns = list(_equations(jaxpr))
    dtype_of = lambda v: str(v.aval.dtype)  # noqa: E731
    bf16_dots = [e for e in eqns if e.primitive.name == "dot_general"
                 and all(dtype_of(v) == "bfloat16" for v in e.invars)]  # fmt: skip
    assert len(bf16_dots) >= 6 * SHAPE["num_layers"]  # the matmuls run in bfloat16
    for prim in ("exp", "reduce_max", "log"):  # softmax, log-softmax / logsumexp
        found = [e for e in eqns if e.primitive.name == prim]
        assert found and all(dtype_of(e.invars[0]) == "float32" for e in found), prim
    # LayerNorm statistics: every mean over the feature axis of [B, L, D] states is float32.
    stats = [e for e in eqns if e.primitive.name == "reduce_sum" and e.invars[0].aval.ndim == 3
             and e.invars[0].aval.shape[-1] == SHAPE["hidden_size"]
             and tuple(e.params["axes"]) == (2,)]  # fmt: skip
    assert len(stats) >= 2 * SHAPE["num_layers"]
    assert all(dtype_of(e.invars[0]) == "float32" for e in stats)
    params, opt, _ = step(params, opt, batch)
    assert {str(x.dtype) for x in jax.tree.leaves(params)} == {"float32"}


@pytest.mark.parametrize("name", ["bert_pretrain", "gpt_lm"])
def test_bfloat16_trains_like_float32(name):
    """50 Adam steps on a learnable stream; the last 10 losses' mean within 5% of float32's."""
    finals = {}
    for dtype in ("float32", "bfloat16"):
        init, step, _ = _trainer(_section(name, dtype=dtype))
        params, opt = init(_batch(name, 0))
        losses = []
        for i in range(50):
            params, opt, loss = step(params, opt, _batch(name, i))
            losses.append(float(loss))
        finals[dtype] = np.mean(losses[-10:])
        assert finals[dtype] < losses[0] * 0.8, (dtype, losses[0], finals[dtype])  # it learned
    assert abs(finals["bfloat16"] - finals["float32"]) < 0.05 * finals["float32"], finals
