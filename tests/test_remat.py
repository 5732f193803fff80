"""Remat policies (tlx.precision, `model.remat`): every name resolves, unknown names fail listing
the valid ones, parameter trees do not change, gradients equal the plain path's (float32, 1e-6)
for BERT, GPT, ELMo and CoVe, GPT's cache decoding is unchanged, and the activations saved for
the backward pass fall as the policy gets stricter.

Memory is measured as the bytes of the residuals `jax.vjp` keeps (jax.eval_shape, no compile):
that is what a policy chooses. XLA:CPU's compiled temp size does not move with remat (its
pipeline drops the optimisation barriers and schedules the recomputation early), so the
compiled figure is only meaningful on GPU / TPU. `python tests/test_remat.py` prints both for
BERT-mini and GPT-mini shapes.
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlx import objectives, precision
from tlx.errors import ConfigError
from tlx.models import bert, cove, elmo, gpt

# Strictest last: each keeps a subset of what the one before keeps.
ORDER = ("none", "dots", "dots_with_no_batch_dims_saveable", "save_proj", "save_out", "full")
SHAPE = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}


def _bert(remat, **shape):
    cfg = bert.config_for_size("custom", **{**SHAPE, **shape}, vocab_size=64, max_position=64,
                               remat=remat)  # fmt: skip
    return bert.BertForPreTraining(cfg), objectives.mlm_nsp


def _gpt(remat, **shape):
    cfg = gpt.config_for_size("custom", **{**SHAPE, **shape}, vocab_size=64, max_position=64,
                              remat=remat)  # fmt: skip
    return gpt.GptForCausalLM(cfg), lambda o, b: objectives.causal_lm(o, b, xent_chunk=0)


def _elmo(remat):
    cfg = elmo.config_for_size("tiny", vocab_size=40, remat=remat)
    return elmo.ElmoLM(cfg), lambda o, b: objectives.bilm(o, b, xent_chunk=0)


def _cove(remat):
    cfg = cove.CoveConfig(30, 30, embed_dim=8, hidden=8, freeze_embed=False, remat=remat)
    return cove.MTLSTM(cfg), objectives.seq2seq


def _batch(family, b=2, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(5, 30, (b, length)), jnp.int32)
    lengths = np.full((b, 1), length)
    lengths[1::2] -= 3  # uneven padding
    mask = jnp.asarray(np.arange(length)[None] < lengths, jnp.int32)  # [B, L]
    out = {"input_ids": ids, "input_mask": mask}
    if family == "bert":
        p = 3
        out.update(
            segment_ids=jnp.zeros_like(ids),
            masked_lm_positions=jnp.asarray(rng.integers(1, length - 3, (b, p)), jnp.int32),
            masked_lm_ids=jnp.asarray(rng.integers(5, 30, (b, p)), jnp.int32),
            masked_lm_weights=jnp.ones((b, p)),
            next_sentence_labels=jnp.zeros((b, 1), jnp.int32),
        )
    if family == "elmo":
        out["char_ids"] = jnp.asarray(rng.integers(1, 200, (b, length, 50)), jnp.int32)
    if family == "cove":
        out.update(decoder_input_ids=ids, decoder_target_ids=ids, decoder_mask=mask)
    return out


FAMILIES = {"bert": _bert, "gpt": _gpt, "elmo": _elmo, "cove": _cove}


def _loss_fn(family, remat, batch, **shape):
    model, objective = FAMILIES[family](remat, **shape)

    def loss(params):  # with dropout: the recomputation must redraw the same masks
        rngs = {"dropout": jax.random.PRNGKey(1)}
        outputs, _ = model.apply({"params": params}, batch, train=True, rngs=rngs)
        return objective(outputs, batch)[0]

    return model, loss


def _params(model, batch):
    key = jax.random.key(0, impl="unsafe_rbg")
    return nn.unbox(jax.jit(model.init)(key, batch)["params"])


def test_every_name_resolves_and_unknown_names_list_the_valid_ones():
    for name in precision.REMATS:
        wrap, policy = precision.remat_policy(name)
        assert wrap == (name != "none") and (policy is None or callable(policy))
    with pytest.raises(ConfigError, match=r"model.remat='fulll'.*save_proj.*dots"):
        precision.remat_policy("fulll")
    with pytest.raises(ConfigError, match="model.remat"):
        bert.config_for_size("tiny", remat="everything")


@pytest.mark.parametrize("family", ["bert", "gpt", "elmo", "cove"])
def test_parameter_tree_unchanged(family):
    """nn.remat / jax.checkpoint add no scope: same paths, shapes and (path-seeded) values."""
    batch = _batch(family)
    plain = _params(FAMILIES[family]("none")[0], batch)
    remat = _params(FAMILIES[family]("full")[0], batch)
    assert jax.tree.structure(plain) == jax.tree.structure(remat)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        np.testing.assert_array_equal(a, b)


POLICIES = {  # a spread of mechanisms per family: jax's policies, the named presets, full
    "bert": ("full", "save_out", "dots_with_no_batch_dims_saveable"),
    "gpt": ("full", "save_proj", "dots"),
    "elmo": ("full", "save_proj"),
    "cove": ("full", "dots"),
}


@pytest.mark.parametrize("family", list(POLICIES))
def test_gradients_equal_the_plain_path(family):
    batch = _batch(family)
    model, loss = _loss_fn(family, "none", batch)
    params = _params(model, batch)
    ref = jax.jit(jax.grad(loss))(params)
    for remat in POLICIES[family]:
        grads = jax.jit(jax.grad(_loss_fn(family, remat, batch)[1]))(params)
        for path, g in jax.tree_util.tree_leaves_with_path(grads):
            want = ref
            for k in path:
                want = want[k.key]
            np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6, err_msg=f"{remat} {path}")


def test_gpt_cache_decoding_unchanged_under_remat():
    ids = _batch("gpt")["input_ids"]
    outs = []
    for remat in ("none", "full"):
        model = _gpt(remat)[0]
        params = _params(model, {"input_ids": ids})
        cache = model.init(jax.random.PRNGKey(0), ids, decode=True, method=model.logits)["cache"]
        cache = jax.tree.map(jnp.zeros_like, cache)
        step = jax.jit(
            lambda p, c, x, m=model: m.apply(
                {"params": p, "cache": c}, x, decode=True, method=m.logits, mutable=["cache"]
            )
        )
        steps = []
        for t in range(ids.shape[1]):  # one token at a time through the cache
            logits, mutated = step(params, cache, ids[:, t : t + 1])
            cache = mutated["cache"]
            steps.append(logits[:, 0])
        outs.append(jnp.stack(steps, 1))  # [B, L, V]
        full = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, method=m.logits))(
            params, ids
        )
        np.testing.assert_allclose(outs[-1], full, atol=2e-5)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


def saved_bytes(family, remat, batch, **shape) -> int:
    """Bytes of the residuals the backward pass reads (what `remat` chooses), without compiling."""
    model, loss = _loss_fn(family, remat, batch, **shape)
    params = jax.eval_shape(lambda r: nn.unbox(model.init(r, batch)["params"]), jax.random.key(0))
    vjp = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(vjp))


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_saved_activations_fall_as_the_policy_gets_stricter(family):
    batch = _batch(family, b=4, length=64)
    sizes = [saved_bytes(family, r, batch, hidden_size=64, intermediate_size=256) for r in ORDER]
    assert all(a >= b for a, b in zip(sizes, sizes[1:])), dict(zip(ORDER, sizes))
    assert sizes[-1] < sizes[0] / 3, dict(zip(ORDER, sizes))


@pytest.mark.parametrize("family", ["elmo", "cove"])
def test_lstm_steps_save_less_under_remat(family):
    batch = _batch(family, length=32)
    none, proj, full = (saved_bytes(family, r, batch) for r in ("none", "save_proj", "full"))
    assert none > proj >= full, (none, proj, full)


def _table(family, shape, b, length):  # pragma: no cover - the report's table
    batch = _batch(family, b=b, length=length)
    for remat in ORDER:
        model, loss = _loss_fn(family, remat, batch, **shape)
        params = jax.eval_shape(
            lambda r, m=model: nn.unbox(m.init(r, batch)["params"]), jax.random.key(0)
        )
        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        saved = saved_bytes(family, remat, batch, **shape)
        print(f"{family} {remat:34s} saved {saved / 2**20:8.2f} MiB  temp {temp / 2**20:8.2f} MiB")


if __name__ == "__main__":  # pragma: no cover
    mini = {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "intermediate_size": 1024}
    b, length = (int(x) for x in sys.argv[1:3]) if len(sys.argv) > 2 else (8, 64)
    for fam in ("bert", "gpt"):
        _table(fam, mini, b, length)
