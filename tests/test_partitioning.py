"""Sharding: identical training on every mesh shape, and params placed as the rules say."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.bert import pretrain
from tlx import partitioning
from tlx import steps as tlx_steps


def _cfg(data, model, **model_overrides):
    cfg = pretrain.get_config("size=tiny,runlocal")
    cfg.unlock()
    cfg.mesh.data, cfg.mesh.model = data, model
    for k, v in model_overrides.items():
        cfg.model[k] = v
    return cfg


def _run(cfg, batches, steps=3):
    devices = jax.devices()[: cfg.mesh.data * cfg.mesh.model]
    setup = tlx_steps.build(cfg, batches[0], devices=devices)
    state = setup.init(jax.random.PRNGKey(0))
    losses = []
    for b in batches[:steps]:
        state, metrics = setup.train_step(state, jax.device_put(b, setup.batch_sharding))
        losses.append(float(metrics["loss"][0]))
    return setup, state, losses


def test_same_losses_on_every_mesh(fake_bert_batches):
    assert jax.device_count() == 8, "conftest sets 8 host CPU devices"
    batches = fake_bert_batches(n=3)
    reference = None
    # (8, 1, 1) and model=2 under fsdp+tp are in test_fsdp.py; here the widest tensor split.
    for data, model in [(1, 1), (2, 4)]:
        _, _, losses = _run(_cfg(data, model), batches)
        assert all(np.isfinite(losses))
        if reference is None:
            reference = losses
        np.testing.assert_allclose(losses, reference, rtol=1e-5, err_msg=f"mesh {data}x{model}")
    assert reference[0] != reference[2], "training must move the loss"


def test_params_carry_the_rules_sharding(fake_bert_batches):
    setup, state, _ = _run(_cfg(4, 2), fake_bert_batches(n=1), steps=1)
    layer = state.params["encoder"]["layers"]["layer_0"]
    expect = {
        "attention/query_kernel": P(None, "model", None),  # [embed, heads, kv]
        "attention/out_kernel": P("model", None, None),  # [heads, kv, embed]
        "mlp/wi/kernel": P(None, "model"),  # [embed, mlp]
        "mlp/wo/kernel": P("model", None),  # [mlp, embed]
        "attention_ln/scale": P(None),
    }
    for path, spec in expect.items():
        leaf = layer
        for key in path.split("/"):
            leaf = leaf[key]
        assert leaf.sharding.spec == spec, path
        assert leaf.sharding.mesh.shape == {"data": 4, "fsdp": 1, "model": 2}
        # Really distributed: each device holds 1/2 of a model-sharded tensor.
        if "model" in spec:
            shard = leaf.addressable_shards[0].data
            assert shard.size * 2 == leaf.size, path
    embedding = state.params["encoder"]["token_embed"]["embedding"]  # 30522 rows split over 2
    assert embedding.sharding.spec == P("model", None)
    # Adam moments shard exactly like the parameter they track.
    mu = jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
    adam = [x for x in mu if hasattr(x, "mu")][0]
    assert adam.mu["encoder"]["layers"]["layer_0"]["mlp"]["wi"]["kernel"].sharding.spec == P(
        None, "model"
    )
    assert setup.batch_sharding.spec == P("data")


def test_indivisible_dims_fall_back_to_replicated(fake_bert_batches):
    # tiny has 2 heads and a 30522 vocab: neither divides a 4-way model axis.
    _, state, losses = _run(_cfg(2, 4), fake_bert_batches(n=1), steps=1)
    q = state.params["encoder"]["layers"]["layer_0"]["attention"]["query_kernel"]
    assert q.sharding.spec == P(None, None, None)
    mlp = state.params["encoder"]["layers"]["layer_0"]["mlp"]["wi"]["kernel"]
    assert mlp.sharding.spec == P(None, "model")
    assert np.isfinite(losses[0])


def test_make_mesh_validates():
    assert partitioning.make_mesh({"data": -1, "model": 2}).shape == {"data": 4, "model": 2}
    with pytest.raises(ValueError, match="needs 6 devices"):
        partitioning.make_mesh({"data": 3, "model": 2})
    with pytest.raises(ValueError, match="at most one"):
        partitioning.make_mesh({"data": -1, "model": -1})
