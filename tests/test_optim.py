"""Optimizer: schedule shape, weight-decay mask, frozen parameters stay put."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from tlx import optim


def _cfg(**kw):
    cfg = common.base_config().optim
    cfg.update(kw)
    return cfg


def _params():
    return {
        "encoder": {
            "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))},
            "attention": {"query_kernel": jnp.ones((4, 2, 2)), "query_bias": jnp.ones((2, 2))},
            "embed_ln": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
            "token_embed": {"embedding": jnp.ones((5, 4))},
        },
        "classifier": {"dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones((2,))}},
    }


def test_warmup_then_linear_decay():
    sched = optim.learning_rate_schedule(_cfg(lr=1.0, warmup_fraction=0.1), total_steps=100)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(55)) == pytest.approx(0.5)
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_skips_layer_norm_and_biases():
    params = _params()
    # Zero gradients: any change comes from decoupled weight decay alone.
    tx, _ = optim.make_optimizer(_cfg(lr=0.1, weight_decay=0.5, grad_clip=0.0), params, 10)
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    changed = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)
    assert changed["encoder"]["dense"]["kernel"] and changed["encoder"]["token_embed"]["embedding"]
    assert changed["encoder"]["attention"]["query_kernel"]
    assert not changed["encoder"]["attention"]["query_bias"]
    assert not changed["encoder"]["dense"]["bias"]
    assert not changed["encoder"]["embed_ln"]["scale"]
    assert not changed["encoder"]["embed_ln"]["bias"]


def test_frozen_regex_freezes_exactly_those_params():
    params = _params()
    tx, _ = optim.make_optimizer(_cfg(lr=0.1, frozen=["encoder/.*"]), params, 10)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    for leaf in jax.tree.leaves(params["encoder"]):
        np.testing.assert_array_equal(leaf, 1.0)
    assert float(jnp.abs(params["classifier"]["dense"]["kernel"] - 1).max()) > 0


def test_frozen_regex_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="encdoer"):
        optim.make_optimizer(_cfg(frozen=["encdoer/.*"]), _params(), 10)


def test_config_arguments_are_checked():
    with pytest.raises(KeyError, match="sise"):
        common.parse_arg("sise=mini", size="tiny")
    args = common.parse_arg("size=base,runlocal", size="tiny", runlocal=False)
    assert args == ml_collections.ConfigDict({"size": "base", "runlocal": True})
