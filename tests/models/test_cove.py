"""CoVe's MT-LSTM: full-size shapes (eval_shape), the parameter layout transfer relies on,
padding invariance, frozen GloVe, teacher forcing == step-by-step decoding, greedy / beam
search, and a copy task it must overfit."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tlx.models import cove

CFG = cove.CoveConfig(src_vocab_size=20, tgt_vocab_size=21, embed_dim=6, hidden=8, dropout_rate=0.0)
MODEL = cove.MTLSTM(CFG)
B, S, T = 3, 6, 6
SRC_LENGTHS, TGT_LENGTHS = np.array([6, 4, 2]), np.array([6, 5, 3])
_apply = jax.jit(MODEL.apply)


def _batch(seed=0, extra_pad=0, noisy_pad=False):
    """Source rows of SRC_LENGTHS real tokens (then `extra_pad` more padding columns, with
    random tokens under the padding if `noisy_pad`); decoder rows BOS + TGT_LENGTHS - 1 tokens."""
    rng = np.random.default_rng(seed)
    s = S + extra_pad
    mask = np.arange(s)[None] < SRC_LENGTHS[:, None]
    src = np.concatenate([rng.integers(4, 20, (B, S)), np.zeros((B, extra_pad), int)], 1)
    fill = np.random.default_rng(99).integers(1, 20, (B, s)) if noisy_pad else cove.PAD
    tgt = rng.integers(4, 21, (B, T))
    tgt[:, 0] = cove.BOS
    return {
        "input_ids": jnp.asarray(np.where(mask, src, fill), jnp.int32),
        "input_mask": jnp.asarray(mask, jnp.int32),
        "decoder_input_ids": jnp.asarray(tgt, jnp.int32),
        "decoder_mask": jnp.asarray(np.arange(T)[None] < TGT_LENGTHS[:, None], jnp.int32),
    }


def _paths(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_leaves_with_path(tree)
    return {"/".join(k.key for k in path): tuple(x.shape) for path, x in flat}


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def params():
    """Normal(0, 0.5) matrices and zero biases on the init's tree. Tracing init is free;
    compiling it is not (10 s on 2 CPU cores), and at the house init (std 0.02) the logits are
    ~1e-7 apart, too flat for comparisons at 1e-5 or for argmax decisions to mean anything."""
    shapes = nn.unbox(jax.eval_shape(MODEL.init, jax.random.PRNGKey(0), _batch())["params"])
    rng = np.random.default_rng(0)
    std = lambda x: 0.5 if x.ndim == 2 else 0.0
    return jax.tree.map(lambda x: jnp.asarray(std(x) * rng.normal(size=x.shape), x.dtype), shapes)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match=r"model\.hidden=0"):
        cove.CoveConfig(20, 21, hidden=0)
    with pytest.raises(ValueError, match=r"model\.dropout_rate=1\.0"):
        cove.CoveConfig(20, 21, dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"model\.bridge=True"):
        cove.CoveConfig(20, 21, decoder_hidden=7)
    cfg = cove.CoveConfig(20, 21, hidden=4, decoder_hidden=7, bridge=False)
    assert (cfg.dec_hidden, cfg.tgt_embed) == (7, cfg.embed_dim)


def test_full_size_shapes_and_transfer_layout():
    """Paper widths: GloVe 300d over 400k words, 300 units per direction, decoder 600."""
    cfg = cove.CoveConfig(400_000, 8_000, embed_dim=300, hidden=300)
    spec = jax.ShapeDtypeStruct((2, 5), jnp.int32)
    batch = dict.fromkeys(("input_ids", "input_mask", "decoder_input_ids", "decoder_mask"), spec)
    params = nn.unbox(jax.eval_shape(cove.MTLSTM(cfg).init, jax.random.PRNGKey(0), batch))
    params = params["params"]
    assert set(params) == {"cove", "decoder"}
    assert set(params["cove"]) == {"embed", "bilstm"}
    assert params["cove"]["embed"]["embedding"].shape == (400_000, 300)
    h4 = 4 * 300
    layer0, layer1 = 300 * h4 + 300 * h4 + h4, 600 * h4 + 300 * h4 + h4  # per direction
    assert _count(params["cove"]["bilstm"]) == 2 * (layer0 + layer1) == 3_604_800
    assert _count(params["cove"]) == 120_000_000 + 3_604_800
    g4 = 4 * 600
    decoder = (
        8_000 * 300  # target embedding
        + (900 * g4 + 600 * g4 + g4)  # layer 0 reads [z; h~]
        + (600 * g4 + 600 * g4 + g4)
        + (600 * 600 + 600)  # attention_in
        + (1200 * 600 + 600)  # attention_out
        + (600 * 8_000 + 8_000)  # logits
    )
    assert _count(params["decoder"]) == decoder

    # A downstream model's CoveEncoder(name="cove") has exactly the MT model's cove/ subtree.
    class Downstream(nn.Module):
        @nn.compact
        def __call__(self, ids, mask):
            return cove.CoveEncoder(cfg, name="cove")(ids, mask)[1][-1]

    down = nn.unbox(jax.eval_shape(Downstream().init, jax.random.PRNGKey(0), spec, spec))
    assert _paths(down["params"]) == {"cove/" + k: v for k, v in _paths(params["cove"]).items()}


def test_param_paths(params):
    paths = _paths(params)
    assert paths["cove/embed/embedding"] == (20, 6)
    assert paths["cove/bilstm/forward_1/layer_0/cell/input_kernel/kernel"] == (16, 32)
    assert all(p.startswith(("cove/embed/", "cove/bilstm/", "decoder/")) for p in paths)
    decoder = {p[len("decoder/") :]: v for p, v in paths.items() if p.startswith("decoder/")}
    assert decoder == {
        "embed/embedding": (21, 6),
        "layer_0/input_kernel/kernel": (6 + 16, 64),
        "layer_0/recurrent_kernel": (16, 64),
        "layer_0/bias": (64,),
        "layer_1/input_kernel/kernel": (16, 64),
        "layer_1/recurrent_kernel": (16, 64),
        "layer_1/bias": (64,),
        "attention_in/kernel": (16, 16),
        "attention_in/bias": (16,),
        "attention_out/kernel": (16 + 16, 16),
        "attention_out/bias": (16,),
        "logits/kernel": (16, 21),
        "logits/bias": (21,),
    }


def test_outputs_and_padding_invariance(params):
    out, inter = _apply({"params": params}, _batch())
    logits = np.asarray(out["logits"])
    assert logits.shape == (B, T, 21) and logits.dtype == np.float32
    assert logits.std() > 0.1  # the sharpened model is not flat
    assert [x.shape for x in inter["hidden_states"]] == [(B, S, 6), (B, S, 16), (B, S, 16)]
    np.testing.assert_array_equal(inter["cove"], inter["hidden_states"][-1])
    pad = np.asarray(_batch()["input_mask"]) == 0
    assert np.all(np.asarray(inter["cove"])[pad] == 0)
    dec_pad = np.asarray(_batch()["decoder_mask"]) == 0
    assert np.all(np.asarray(inter["decoder_states"])[dec_pad] == 0)
    # Two more padding columns, and random tokens under all the padding: same logits.
    other, _ = _apply({"params": params}, _batch(extra_pad=2, noisy_pad=True))
    real = ~dec_pad
    np.testing.assert_allclose(np.asarray(other["logits"])[real], logits[real], atol=1e-5)
    changed, _ = _apply({"params": params}, _batch(seed=5))  # and the test can fail
    assert np.abs(np.asarray(changed["logits"])[real] - logits[real]).max() > 1e-2


@jax.jit
def _stepwise_logits(params, batch):
    variables = {"params": params}
    memory = MODEL.apply(variables, batch, method=MODEL.encode)
    state = MODEL.apply(variables, memory, method=MODEL.init_decode_state)

    def body(state, prev):
        logits, state = MODEL.apply(variables, memory, state, prev, method=MODEL.decode_step)
        return state, logits

    _, logits = jax.lax.scan(body, state, batch["decoder_input_ids"].T)
    return jnp.swapaxes(logits, 0, 1)  # [B, T, V]


def test_teacher_forcing_equals_step_by_step(params):
    batch = _batch()
    forced = np.asarray(_apply({"params": params}, batch)[0]["logits"])
    stepped = np.asarray(_stepwise_logits(params, batch))
    np.testing.assert_allclose(stepped, forced, atol=1e-5)


def _score(params, batch, ids, alpha):
    """Model log-prob of each hypothesis ids [B, T] (through its first EOS), / length penalty."""
    ids = np.asarray(ids)
    is_eos = ids == cove.EOS
    length = np.where(is_eos.any(1), is_eos.argmax(1) + 1, ids.shape[1])  # [B]
    dec = dict(batch)
    dec["decoder_input_ids"] = jnp.asarray(
        np.concatenate([np.full((B, 1), cove.BOS), ids[:, :-1]], 1), jnp.int32
    )
    logits = _apply({"params": params}, dec)[0]["logits"]
    logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), ids[..., None], -1)[..., 0]
    logp = np.where(np.arange(ids.shape[1])[None] < length[:, None], logp, 0.0).sum(1)
    return logp / np.asarray(cove.length_penalty(length.astype(np.float32), alpha))


def test_greedy_and_beam_search(params):
    batch = _batch()
    params = jax.tree.map(lambda x: x, params)  # a copy; EOS more likely, so some rows stop
    params["decoder"]["logits"]["bias"] = params["decoder"]["logits"]["bias"].at[cove.EOS].set(0.3)
    greedy = np.asarray(cove.greedy_decode(MODEL, params, batch, T))
    assert greedy.shape == (B, T)
    finished = 0
    for row in greedy:
        eos = np.flatnonzero(row == cove.EOS)
        end = eos[0] if len(eos) else T
        finished += len(eos) > 0
        assert np.all(row[end + 1 :] == cove.PAD), row  # after EOS only PAD
        assert not np.isin(row[:end], [cove.PAD, cove.BOS]).any(), row
    assert 0 < finished  # some row does stop

    beam1, score1 = cove.beam_search(
        MODEL, params, batch, beam_size=1, max_len=T, alpha=0.6, return_scores=True
    )
    np.testing.assert_array_equal(np.asarray(beam1), greedy)
    greedy_score = _score(params, batch, greedy, 0.6)
    np.testing.assert_allclose(np.asarray(score1), greedy_score, atol=1e-4)

    beam, score = cove.beam_search(
        MODEL, params, batch, beam_size=4, max_len=T, alpha=0.6, return_scores=True
    )
    beam_score = _score(params, batch, beam, 0.6)
    np.testing.assert_allclose(np.asarray(score), beam_score, atol=1e-4)  # its own score
    assert np.all(beam_score >= greedy_score - 1e-5), (beam_score, greedy_score)


def test_copy_task_overfits_and_glove_stays_frozen(params):
    """Target = source + EOS, learned in 60 Adam steps with dropout, then greedy decoding
    copies. GloVe gets an all-zero gradient, so Adam never moves it; the BiLSTM does learn."""
    model = cove.MTLSTM(dataclasses.replace(CFG, dropout_rate=0.1))
    rng = np.random.default_rng(3)
    lengths = np.array([5, 3, 4])
    mask = np.arange(S)[None] < lengths[:, None]
    src = np.where(mask, rng.integers(4, 20, (B, S)), cove.PAD)
    targets = src.copy()  # [B, T]
    targets[np.arange(B), lengths] = cove.EOS
    weights = (np.arange(T)[None] <= lengths[:, None]).astype(np.float32)
    batch = {
        "input_ids": jnp.asarray(src, jnp.int32),
        "input_mask": jnp.asarray(mask, jnp.int32),
        "decoder_input_ids": jnp.asarray(
            np.concatenate([np.full((B, 1), cove.BOS), targets[:, :-1]], 1), jnp.int32
        ),
        "decoder_mask": jnp.asarray(weights, jnp.int32),
    }
    tx = optax.adam(3e-2)

    @jax.jit
    def step(p, opt, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, batch, train=True, rngs={"dropout": key})
            logits = logits[0]["logits"]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return (ce * weights).sum() / weights.sum()

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss, grads

    p, opt = params, tx.init(params)
    other_key = step(p, opt, jax.random.PRNGKey(100))[2]  # dropout is on
    losses = []
    for i in range(60):
        p, opt, loss, grads = step(p, opt, jax.random.PRNGKey(i))
        losses.append(float(loss))
        if i == 0:
            assert abs(losses[0] - float(other_key)) > 1e-4
            assert not np.asarray(grads["cove"]["embed"]["embedding"]).any()
            for path, g in jax.tree_util.tree_leaves_with_path(grads["cove"]["bilstm"]):
                assert np.abs(np.asarray(g)).max() > 0, path
    np.testing.assert_array_equal(
        p["cove"]["embed"]["embedding"], params["cove"]["embed"]["embedding"]
    )
    assert losses[0] > 2.0 and losses[-1] < 0.1 * losses[0], losses[::10]
    np.testing.assert_array_equal(cove.greedy_decode(MODEL, p, batch, T), targets)
