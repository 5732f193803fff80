"""Gradient accumulation inside the step (`train.microbatches = K`, tlx.optim.accumulate_grads):
K slices of a batch whose rows score different numbers of targets (some rows padding) give the
whole batch's gradient, metrics and, after a few steps, parameters, for BERT (MLM + NSP), packed
GPT and a BERT tagger; also under an 8-device data-parallel mesh.

Tolerances: each model runs in float32 and its attention casts to float32, so no float64
reference exists; K microbatches and one batch sum the same terms in another order, which moves
the gradient by ~1e-7 of its norm, so rel 1e-6 (of the global norm) holds on any CPU while a
wrong normalisation (the mean of per-microbatch means) is off by > 1e-2.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from configs.bert import pretrain as bert_pretrain
from configs.gpt import pretrain as gpt_pretrain
from tlx import config_checks, objectives, optim, sparse, steps
from tlx.errors import ConfigError
from tlx.models import bert, gpt

B, L, P, V = 16, 12, 4, 64
SHAPE = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=V)
DROPOUT = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
RNG = jax.random.key(1)  # the train state's


def _example_weight():
    w = np.ones(B, np.float32)
    w[[3, 6, 13]] = 0.0  # padding rows that fill the batch
    return w


def _bert_batch(rng):
    lengths = rng.integers(5, L + 1, B)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    scored = np.arange(P)[None] < (np.arange(B) % P + 1)[:, None]  # 1..P targets per row
    return {
        "input_ids": rng.integers(5, V, (B, L)).astype(np.int32) * mask,
        "segment_ids": (np.arange(L)[None] >= lengths[:, None] // 2).astype(np.int32) * mask,
        "input_mask": mask,
        "masked_lm_positions": np.stack([rng.choice(4, P, replace=False) + 1 for _ in range(B)]),
        "masked_lm_ids": rng.integers(5, V, (B, P)).astype(np.int32),
        "masked_lm_weights": scored.astype(np.float32),
        "next_sentence_labels": rng.integers(0, 2, (B, 1)).astype(np.int32),
        "example_weight": _example_weight(),
    }


def _gpt_batch(rng):
    # Packed rows: 1-3 documents each, then padding (document 0); positions restart per document.
    docs, positions = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32)
    for r in range(B):
        cuts = np.sort(rng.choice(np.arange(2, L), r % 3 + 1, replace=False))
        start = 0
        for d, end in enumerate(cuts, 1):
            docs[r, start:end], positions[r, start:end] = d, np.arange(end - start)
            start = end
    return {
        "input_ids": rng.integers(5, V, (B, L)).astype(np.int32) * (docs > 0),
        "document_ids": docs,
        "positions": positions,
        "example_weight": _example_weight(),
    }


def _tagging_batch(rng):
    batch = _bert_batch(rng)
    first_pieces = rng.random((B, L)) < 0.6
    return {
        **{k: batch[k] for k in ("input_ids", "segment_ids", "input_mask", "example_weight")},
        "labels": rng.integers(0, 5, (B, L)).astype(np.int32),
        "label_weights": (first_pieces & (batch["input_mask"] > 0)).astype(np.int32),
    }


@functools.cache
def _case(name: str, dropout: bool = False):
    """(model, objective, batch, params) of one paradigm at tiny shapes; dropout at the
    models' defaults (0.1) or off."""
    dropout = {} if dropout else DROPOUT
    rng = np.random.default_rng(0)
    if name == "bert":
        model = bert.BertForPreTraining(bert.config_for_size("custom", **SHAPE, **dropout))
        objective, batch = objectives.mlm_nsp, _bert_batch(rng)
    elif name == "gpt":
        model = gpt.GptForCausalLM(
            gpt.config_for_size("custom", **SHAPE, max_position=L, **dropout)
        )
        objective, batch = objectives.get("causal_lm"), _gpt_batch(rng)
    else:
        model = bert.tagger(bert.config_for_size("custom", **SHAPE, **dropout), 5)
        objective, batch = objectives.tagging, _tagging_batch(rng)
    batch = jax.tree.map(jnp.asarray, batch)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), batch)["params"])
    return model, objective, batch, params


def _grads_fn(model, objective, k):
    return jax.jit(lambda p, b, r: optim.accumulate_grads(model, objective, p, b, r, k))


def _rel(a, b) -> float:
    """|a - b| / |b| over whole trees, in float64 numpy (no eager jax op to compile)."""
    a, b = (jax.tree.leaves(jax.device_get(t)) for t in (a, b))
    diff = sum(np.sum((np.float64(x) - y) ** 2) for x, y in zip(a, b, strict=True))
    return float(np.sqrt(diff / sum(np.sum(np.float64(y) ** 2) for y in b)))


def _mean_of_means_grads(model, objective, params, batch, rng, k):
    """The wrong accumulation: the mean over microbatches of each one's own mean loss."""
    micro = optim.split_microbatches(batch, k)
    total = None
    for i in range(k):
        mb = jax.tree.map(lambda x, i=i: x[i], micro)

        def loss(p, mb=mb, i=i):
            outputs, _ = model.apply(
                {"params": p}, mb, train=True, rngs={"dropout": jax.random.fold_in(rng, i)}
            )
            return objective(outputs, mb)[0] / k

        g = jax.grad(loss)(params)
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return total


def _optim_cfg():
    cfg = common.base_config().optim
    cfg.update(lr=1e-2, grad_clip=0.05)  # clipping active: it must see the whole gradient
    return cfg


def _recording(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` behind a transformation whose state keeps the gradient the step hands it."""
    record = optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params), lambda g, state, params=None: (g, g)
    )
    return optax.chain(record, tx)


@functools.cache
def _runs(name: str) -> dict:
    """K -> (the first step's gradient and metrics, the params after 3 steps, grad norms): one
    compiled step per K serves both the gradient and the parameter comparisons."""
    model, objective, batch, params = _case(name)
    tx, schedule = optim.make_optimizer(_optim_cfg(), params, 10)
    tx = _recording(tx)
    out = {}
    for k in (1, 2, 4, 8):
        step = jax.jit(optim.make_train_step(model, objective, tx, schedule, microbatches=k))
        state = steps.TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), RNG)
        state, metrics = step(state, batch)
        grads, norms = state.opt_state[0], [float(metrics["grad_norm"])]
        for _ in range(2):
            state, m = step(state, batch)
            norms.append(float(m["grad_norm"]))
        out[k] = jax.device_get((grads, metrics, state.params, norms))
    return out


@pytest.mark.parametrize("name", ["bert", "gpt", "tagging"])
def test_microbatches_give_the_whole_batch_gradient_and_metrics(name):
    runs = _runs(name)
    full, full_metrics, _, _ = runs[1]
    for k in (2, 4, 8):
        grads, metrics, _, _ = runs[k]
        assert _rel(grads, full) < 1e-6, (k, _rel(grads, full))
        assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda g: g.dtype, full)
        assert set(metrics) == set(full_metrics)
        for key, value in full_metrics.items():
            for ours, want in zip(jax.tree.leaves(metrics[key]), jax.tree.leaves(value)):
                np.testing.assert_allclose(ours, want, rtol=1e-6, err_msg=f"{key} K={k}")
    # The test can fail: the microbatches score different numbers of targets, so averaging
    # their own means moves the gradient far beyond the bound above.
    model, objective, batch, params = _case(name)
    wrong = jax.jit(_mean_of_means_grads, static_argnums=(0, 1, 5))(
        model,
        objective,
        params,
        batch,
        RNG,
        2,  # no dropout: the rng is not used
    )
    assert _rel(wrong, full) > 1e-2


@pytest.mark.parametrize("name", ["bert", "gpt", "tagging"])
def test_microbatches_give_the_same_params_after_three_steps(name):
    # Dropout off: with it on, K > 1 draws other masks than K = 1 (one rng per microbatch).
    runs = _runs(name)
    _, _, ref, norms = runs[1]
    assert min(norms) > 0.05  # above optim.grad_clip: every step clips
    init = jax.device_get(_case(name)[3])
    for k in (2, 4, 8):
        params = runs[k][2]
        # Adam moves each parameter by ~lr = 1e-2 a step; float32 reordering of the gradient
        # moves that by ~1e-8, and by up to ~1e-6 where an element's gradient is near zero
        # (Adam divides by its magnitude), so: 1e-5 per element, 1e-5 of the whole change.
        assert _rel(params, ref) < 1e-5 * _rel(ref, init), k  # i.e. |diff| < 1e-5 |change|
        for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(ref), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=f"K={k} {path}")


def test_one_microbatch_is_todays_step_bit_for_bit():
    model, objective, batch, params = _case("gpt", dropout=True)  # dropout on
    tx, schedule = optim.make_optimizer(_optim_cfg(), params, 10)

    def todays_step(state, batch):  # tlx.optim's dense step before accumulation, verbatim
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            outputs, _ = model.apply(
                {"params": params}, batch, train=True, rngs={"dropout": dropout_rng}
            )
            return objective(outputs, batch)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "lr": schedule(state.step), "grad_norm": optax.global_norm(grads)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    state = steps.TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), RNG)
    ours = jax.jit(optim.make_train_step(model, objective, tx, schedule, microbatches=1))
    theirs = jax.jit(todays_step)
    a, b = state, state
    for _ in range(2):
        (a, ma), (b, mb) = ours(a, batch), theirs(b, batch)
        jax.tree.map(
            np.testing.assert_array_equal, (a.params, a.opt_state), (b.params, b.opt_state)
        )
        jax.tree.map(np.testing.assert_array_equal, ma, mb)


def test_each_microbatch_draws_its_own_dropout():
    model, objective, batch, params = _case("gpt", dropout=True)  # dropout on
    rng = jax.random.PRNGKey(5)
    grads, _ = _grads_fn(model, objective, 2)(params, batch, rng)
    micro = optim.split_microbatches(batch, 2)

    def by_hand(rngs):  # sum over microbatches of grad(loss normalised by the whole batch)
        total = None
        for i, r in enumerate(rngs):
            mb = jax.tree.map(lambda x, i=i: x[i], micro)

            def loss(p, mb=mb, r=r):
                outputs, _ = model.apply({"params": p}, mb, train=True, rngs={"dropout": r})
                return objective(outputs, mb, whole=batch)[0]

            g = jax.grad(loss)(params)
            total = g if total is None else jax.tree.map(jnp.add, total, g)
        return total

    by_hand = jax.jit(by_hand)
    own = by_hand([jax.random.fold_in(rng, i) for i in range(2)])
    shared = by_hand([jax.random.fold_in(rng, 0)] * 2)
    assert _rel(grads, own) < 1e-6
    assert _rel(shared, own) > 1e-3  # the same mask for both would be a different gradient


def test_microbatches_under_an_eight_device_data_parallel_mesh():
    """Rows sharded over 8 devices: the strided split keeps every microbatch on all of them
    (no batch all-gather or all-to-all in the compiled step), and the gradient is unchanged."""
    model, objective, batch, params = _case("gpt")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rng = jax.random.fold_in(RNG, 0)  # the first step's dropout rng, as in _runs
    full = _runs("gpt")[1][0]
    for k in (2, 4):  # B / K = 8 rows: one per device; 4: fewer rows than devices (resharded)
        fn = jax.jit(
            lambda p, b, r, k=k: optim.accumulate_grads(model, objective, p, b, r, k),
            in_shardings=(replicated, rows, replicated),
            out_shardings=replicated,
        )
        sharded = jax.device_put(batch, rows)
        grads, _ = fn(params, sharded, rng)
        assert _rel(grads, full) < 1e-6, (k, _rel(grads, full))
        if k == 2:
            hlo = fn.lower(params, sharded, rng).compile().as_text()
            assert "all-to-all" not in hlo and "all-gather" not in hlo


def test_microbatches_must_divide_the_batch():
    model, objective, batch, params = _case("tagging")
    with pytest.raises(ConfigError, match="train.microbatches=3 does not divide the batch of 16"):
        _grads_fn(model, objective, 3)(params, batch, jax.random.PRNGKey(0))
    cfg = bert_pretrain.get_config()
    cfg.train.batch_size = 16
    for bad in (3, 0, -2):
        cfg.train.microbatches = bad
        with pytest.raises(ConfigError, match=f"train.microbatches={bad!r}: must be a positive"):
            config_checks.check_values(cfg, 1)
    cfg.train.microbatches = 4
    config_checks.check_values(cfg, 1)


def test_row_sparse_optimizers_take_whole_batches():
    cfg = common.base_config().optim
    cfg.update(name="sparse_sgd")
    params = {"w": jnp.zeros((4, 2))}
    tx, schedule = optim.make_optimizer(cfg, params, 10)
    assert isinstance(tx, sparse.SparseOptimizer)
    with pytest.raises(ConfigError, match="train.microbatches=2: optim.name='sparse_sgd'"):
        optim.make_train_step(None, objectives.glove, tx, schedule, microbatches=2)


def test_a_penalty_is_counted_once_per_step():
    """ELMo-style `penalty` output: K microbatches add it (and its gradient) once, not K times."""

    class Penalised(nn.Module):
        @nn.compact
        def __call__(self, batch, *, train=False):
            logits = nn.Dense(3)(batch["x"])
            w = self.param("mix", nn.initializers.ones, (2,))
            return {"logits": logits, "penalty": 0.5 * (w**2).sum()}, {}

    rng = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32),
        "input_ids": jnp.zeros((8, 1), jnp.int32),
    }
    model = Penalised()
    params = model.init(jax.random.PRNGKey(0), batch)["params"]
    full, _ = _grads_fn(model, objectives.classification, 1)(params, batch, jax.random.PRNGKey(0))
    grads, _ = _grads_fn(model, objectives.classification, 4)(params, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(grads["mix"], full["mix"], rtol=1e-6)
    np.testing.assert_allclose(full["mix"], params["mix"], rtol=1e-6)  # d(0.5 w^2)/dw = w, once
    assert _rel(grads, full) < 1e-6


def test_train_microbatches_reaches_the_built_step():
    """`train.microbatches` through tlx.steps.build, on the 8-device mesh the config asks for:
    GPT's config (materialised logits: objective.xent_chunk = 0) gives K = 1's step at K = 2."""
    batch = jax.device_get(_case("gpt")[2])
    metrics = {}
    for k in (1, 2):
        cfg = gpt_pretrain.get_config("size=tiny,runlocal")
        cfg.model.update(vocab_size=V, max_position=L, dropout_rate=0.0, attention_dropout_rate=0.0)
        cfg.train.update(batch_size=B, microbatches=k)
        setup = steps.build(cfg, batch)
        assert setup.mesh.devices.size == 8
        state = setup.init(jax.random.key(0))
        _, metrics[k] = setup.train_step(state, jax.device_put(batch, setup.batch_sharding))
    for key in ("loss", "lm_accuracy", "grad_norm"):
        np.testing.assert_allclose(*(jax.tree.leaves(metrics[k][key]) for k in (1, 2)), rtol=1e-6)
