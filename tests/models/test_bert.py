"""BERT model tiers: full-size shapes for free (eval_shape), golden parameter tree, behaviour."""

import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlx.models import bert

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "bert_mini_pretrain_params.json"


def _batch(b=2, length=16, p=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "input_ids": jnp.asarray(rng.integers(5, 1000, (b, length)), jnp.int32),
        "segment_ids": jnp.asarray(np.repeat([[0] * (length // 2) + [1] * (length // 2)], b, 0)),
        "input_mask": jnp.ones((b, length), jnp.int32),
        "masked_lm_positions": jnp.asarray(rng.integers(1, length, (b, p)), jnp.int32),
    }


def _abstract_params(cfg, mlm_all_positions=False):
    model = bert.BertForPreTraining(cfg, mlm_all_positions=mlm_all_positions)
    batch = _batch(length=128)
    return nn.unbox(jax.eval_shape(lambda r: model.init(r, batch), jax.random.PRNGKey(0)))["params"]


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "size,total,encoder",
    [
        # google-research/bert BERT-Base / BERT-Large uncased (= HF BertForPreTraining / BertModel).
        ("base", 110_106_428, 109_482_240),
        ("large", 336_226_108, 335_141_888),
    ],
)
def test_full_size_parameter_counts(size, total, encoder):
    params = _abstract_params(bert.config_for_size(size))
    assert _count(params) == total
    assert _count(params["encoder"]) == encoder


def _shapes(params) -> dict[str, list[int]]:
    from tlx.optim import path_str

    return {path_str(p): list(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params)}


def test_golden_parameter_tree():
    """Names and shapes of BERT-mini's parameters are frozen: renaming one breaks checkpoints.
    Regenerate deliberately with TLX_REGEN_GOLDEN=1."""
    shapes = _shapes(_abstract_params(bert.config_for_size("mini")))
    if os.environ.get("TLX_REGEN_GOLDEN"):
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(shapes.items())]
        GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    assert shapes == json.loads(GOLDEN.read_text())


def test_outputs_and_intermediates():
    cfg = bert.config_for_size("tiny", vocab_size=1000, dropout_rate=0.0)
    model = bert.BertForPreTraining(cfg)
    batch = _batch()
    variables = model.init(jax.random.PRNGKey(0), batch)
    out, inter = model.apply(variables, batch)
    assert out["mlm_logits"].shape == (2, 3, 1000)
    assert out["nsp_logits"].shape == (2, 2)
    assert len(inter["hidden_states"]) == cfg.num_layers + 1
    assert inter["pooled"].shape == (2, cfg.hidden_size)
    # The masked-position logits are exactly the all-positions logits gathered at those positions.
    all_model = bert.BertForPreTraining(cfg, mlm_all_positions=True)
    all_out, _ = all_model.apply(variables, batch)
    gathered = np.take_along_axis(
        np.asarray(all_out["mlm_logits"]), np.asarray(batch["masked_lm_positions"])[..., None], 1
    )
    np.testing.assert_allclose(out["mlm_logits"], gathered, rtol=1e-5, atol=1e-5)


def test_decoder_is_tied_to_token_embedding():
    cfg = bert.config_for_size("tiny", vocab_size=1000, dropout_rate=0.0)
    model = bert.BertForPreTraining(cfg)
    batch = _batch()
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch))["params"]
    assert "decoder" not in str(jax.tree_util.keystr(params["mlm_head"]))
    out0, _ = model.apply({"params": params}, batch)
    params["encoder"]["token_embed"]["embedding"] = (
        params["encoder"]["token_embed"]["embedding"].at[:, 0].add(1.0)
    )
    out1, _ = model.apply({"params": params}, batch)
    # Changing the embedding changes the MLM logits even at identical hidden inputs.
    assert not np.allclose(out0["mlm_logits"], out1["mlm_logits"])


def test_padding_does_not_change_real_positions():
    cfg = bert.config_for_size("tiny", vocab_size=1000, dropout_rate=0.0)
    encoder = bert.BertEncoder(cfg)
    batch = _batch(b=1, length=8)
    mask = jnp.asarray([[1, 1, 1, 1, 1, 0, 0, 0]], jnp.int32)
    ids = batch["input_ids"]
    seg = jnp.zeros_like(ids)
    variables = encoder.init(jax.random.PRNGKey(0), ids, seg, mask, deterministic=True)
    a, _ = encoder.apply(variables, ids, seg, mask, deterministic=True)
    b, _ = encoder.apply(variables, ids.at[:, 5:].set(7), seg, mask, deterministic=True)
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)


def test_gelu_variants_and_layer_norm_eps():
    assert bert.config_for_size("base").layer_norm_eps == 1e-12
    outs = {}
    for gelu in ("tanh", "erf"):
        cfg = bert.config_for_size("tiny", vocab_size=1000, dropout_rate=0.0, gelu=gelu)
        model = bert.BertForPreTraining(cfg)
        batch = _batch()
        outs[gelu] = model.apply(model.init(jax.random.PRNGKey(0), batch), batch)[0]["mlm_logits"]
    assert not np.allclose(outs["tanh"], outs["erf"])
    np.testing.assert_allclose(outs["tanh"], outs["erf"], atol=5e-2)
    with pytest.raises(ValueError, match="gelu"):
        cfg = bert.config_for_size("tiny", vocab_size=100, gelu="relu")
        bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(0), _batch())


def test_unknown_size_is_named():
    with pytest.raises(ValueError, match="'huge'"):
        bert.config_for_size("huge")
