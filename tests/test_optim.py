"""Optimizer: schedule shape, weight-decay mask, frozen parameters stay put under every
optimizer, and make_train_step hands each optimizer the step it needs."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from tlx import objectives, optim, sparse
from tlx.models import embeddings

DENSE = ("adamw", "sgd", "adagrad")


@flax.struct.dataclass
class State:
    step: jnp.ndarray
    params: dict
    opt_state: optax.OptState
    rng: jnp.ndarray


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


@pytest.mark.parametrize("name", DENSE + sparse.NAMES)
def test_frozen_regex_that_matches_nothing_is_an_error(name):
    with pytest.raises(ValueError, match="encdoer"):
        optim.make_optimizer(_cfg(name=name, frozen=["encdoer/.*"]), _params(), 10)


class Tiny(nn.Module):
    """encoder -> dropout -> classifier: the dense step must pass a dropout rng."""

    @nn.compact
    def __call__(self, batch, train=False):
        h = jnp.tanh(nn.Dense(4, name="encoder")(batch["x"]))
        h = nn.Dropout(0.5, deterministic=not train)(h)
        return {"y": nn.Dense(2, name="classifier")(h)}, {}


def mse(outputs, batch):
    loss = ((outputs["y"] - batch["y"]) ** 2).mean()
    return loss, {"loss": (loss, 1.0)}


def _tiny():
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 3)), "y": rng.normal(size=(8, 2))}
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
    params = Tiny().init(jax.random.PRNGKey(0), batch)["params"]
    return batch, params


def _glove(e=6):
    rng = np.random.default_rng(0)
    batch = {
        "row": rng.integers(0, 10, (2, e)).astype(np.int32),
        "col": rng.integers(0, 10, (2, e)).astype(np.int32),
        "log_count": rng.normal(size=(2, e)).astype(np.float32),
        "weight": rng.uniform(0.1, 1.0, (2, e)).astype(np.float32),
    }
    batch["row"][0, 1] = batch["row"][0, 0]  # a repeated row
    model = embeddings.GloVe(10, 3)
    return model, batch, nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])


def _run(model, objective, cfg, params, batch, steps=3):
    tx, schedule = optim.make_optimizer(cfg, params, 10)
    step = jax.jit(optim.make_train_step(model, objective, tx, schedule))
    state = State(jnp.zeros([], jnp.int32), params, tx.init(params), jax.random.PRNGKey(1))
    for _ in range(steps):
        state, _ = step(state, batch)
    return state


@pytest.mark.parametrize("name", DENSE)
def test_frozen_params_stay_bit_identical_under_dense_optimizers(name):
    batch, params = _tiny()
    cfg = _cfg(name=name, lr=0.1, weight_decay=0.5, frozen=["encoder/.*"])
    new = _run(Tiny(), mse, cfg, params, batch).params
    for old, leaf in zip(jax.tree.leaves(params["encoder"]), jax.tree.leaves(new["encoder"])):
        np.testing.assert_array_equal(leaf, old)
    for old, leaf in zip(jax.tree.leaves(params["classifier"]), jax.tree.leaves(new["classifier"])):
        assert float(jnp.abs(leaf - old).max()) > 0


@pytest.mark.parametrize("name", sparse.NAMES)
def test_frozen_tables_stay_bit_identical_under_sparse_optimizers(name):
    model, batch, params = _glove()
    cfg = _cfg(name=name, lr=0.1, frozen=["w_ctx", "b.*"])
    state = _run(model, objectives.glove, cfg, params, batch)
    for table in ("w_ctx", "b", "b_ctx"):
        np.testing.assert_array_equal(state.params[table], params[table], err_msg=table)
    assert float(jnp.abs(state.params["w"] - params["w"]).max()) > 0
    if name == "sparse_adagrad":  # frozen tables keep no accumulator
        assert set(state.opt_state) == {"w"}
        assert float(state.opt_state["w"].max()) > cfg.get("initial_accumulator", 1.0)


def test_make_train_step_dense_step_matches_optax_by_hand():
    batch, params = _tiny()
    tx, schedule = optim.make_optimizer(_cfg(lr=0.1, warmup_steps=5), params, 10)
    step = jax.jit(optim.make_train_step(Tiny(), mse, tx, schedule))
    state = State(jnp.zeros([], jnp.int32), params, tx.init(params), jax.random.PRNGKey(1))
    state, _ = step(state, batch)  # past step 0, where warmup's lr is 0
    new, metrics = step(state, batch)

    def loss(p):  # the step's dropout mask: its rng folded with the step number
        rngs = {"dropout": jax.random.fold_in(state.rng, 1)}
        return mse(Tiny().apply({"params": p}, batch, train=True, rngs=rngs)[0], batch)[0]

    grads = jax.grad(loss)(state.params)
    updates, _ = tx.update(grads, state.opt_state, state.params)
    want = optax.apply_updates(state.params, updates)
    for got, exp, old in zip(*map(jax.tree.leaves, (new.params, want, state.params))):
        np.testing.assert_allclose(got, exp, rtol=1e-6, atol=1e-7)
        assert float(jnp.abs(got - old).max()) > 0
    assert int(new.step) == 2
    assert float(metrics["lr"]) == pytest.approx(float(schedule(1))) and schedule(1) > 0
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.global_norm(grads)), 1e-5)
    assert float(metrics["loss"][0]) == pytest.approx(float(loss(state.params)), 1e-5)


def test_make_train_step_gives_sparse_optimizers_the_row_sparse_step():
    model, batch, params = _glove()
    cfg = _cfg(name="sparse_sgd", lr=0.1, warmup_steps=5)
    tx, schedule = optim.make_optimizer(cfg, params, 10)
    fn = optim.make_train_step(model, objectives.glove, tx, schedule)
    assert fn.__module__ == "tlx.sparse"
    state = State(jnp.full([], 2, jnp.int32), params, tx.init(params), jax.random.PRNGKey(1))
    new, metrics = jax.jit(fn)(state, batch)

    def loss(p):
        return objectives.glove(model.apply({"params": p}, batch)[0], batch)[0]

    # Row-sparse SGD (repeated rows summed) is dense SGD on the dense gradient.
    lr = float(schedule(2))
    grads = jax.grad(loss)(params)
    for name in params:
        want = params[name] - lr * grads[name]
        np.testing.assert_allclose(new.params[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
        assert float(jnp.abs(new.params[name] - params[name]).max()) > 0
    assert int(new.step) == 3 and float(metrics["lr"]) == pytest.approx(lr)
    with pytest.raises(ValueError, match="sparse_sgd"):
        optim.make_train_step(model, objectives.glove, tx, optax.constant_schedule(0.1))


def test_config_arguments_are_checked():
    with pytest.raises(KeyError, match="sise"):
        common.parse_arg("sise=mini", size="tiny")
    args = common.parse_arg("size=base,runlocal", size="tiny", runlocal=False)
    assert args == ml_collections.ConfigDict({"size": "base", "runlocal": True})
