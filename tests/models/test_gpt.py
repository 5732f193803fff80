"""GPT model tiers: full-size shapes (eval_shape), golden parameter tree, causal / packed
attention, KV-cache decoding, the fused tied cross-entropy and GPT-1's finetuning objective."""

import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tlx import generate, objectives
from tlx.models import gpt

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "gpt_mini_lm_params.json"
VOCAB = 300


def _cfg(variant="gpt2", **kw):
    kw = {"vocab_size": VOCAB, "max_position": 64, "dropout_rate": 0.0, **kw}
    return gpt.config_for_size("tiny", variant, attention_dropout_rate=0.0, **kw)


def _ids(b=2, length=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(5, VOCAB, (b, length)), jnp.int32)


def _init(model, batch):
    return nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "variant,vocab,positions,total",
    [
        # HF GPT2LMHeadModel "gpt2" (124M, tied head) and OpenAIGPTModel "openai-gpt".
        ("gpt2", 50257, 1024, 124_439_808),
        ("gpt1", 40478, 512, 116_534_784),
    ],
)
def test_full_size_parameter_counts(variant, vocab, positions, total):
    cfg = gpt.config_for_size("small", variant, vocab_size=vocab, max_position=positions)
    model = gpt.GptForCausalLM(cfg)
    batch = {"input_ids": jnp.zeros((1, 128), jnp.int32)}
    shapes = jax.eval_shape(lambda r: model.init(r, batch), jax.random.PRNGKey(0))
    assert _count(nn.unbox(shapes)["params"]) == total


def test_variant_details():
    g1, g2 = gpt.config_for_size("small", "gpt1"), gpt.config_for_size("small", "gpt2")
    assert (g1.norm_position, g2.norm_position) == ("post", "pre")
    assert g1.layer_norm_eps == g2.layer_norm_eps == 1e-5
    assert g1.gelu == g2.gelu == "tanh"
    assert (g1.scale_residual_init, g2.scale_residual_init) == (False, True)
    p1 = _init(gpt.GptForCausalLM(_cfg("gpt1")), {"input_ids": _ids()})
    p2 = _init(gpt.GptForCausalLM(_cfg("gpt2")), {"input_ids": _ids()})
    assert "final_ln" not in p1["decoder"] and "final_ln" in p2["decoder"]
    with pytest.raises(ValueError, match="'gpt3'"):
        gpt.config_for_size("tiny", "gpt3")
    with pytest.raises(ValueError, match="'huge'"):
        gpt.config_for_size("huge")


def test_golden_parameter_tree():
    """Names and shapes of GPT-mini's parameters are frozen: renaming one breaks checkpoints
    and the HF converter. Regenerate deliberately with TLX_REGEN_GOLDEN=1."""
    from tlx.optim import path_str

    model = gpt.GptForCausalLM(gpt.config_for_size("mini", "gpt2", vocab_size=8000))
    batch = {"input_ids": jnp.zeros((1, 16), jnp.int32)}
    params = nn.unbox(jax.eval_shape(lambda r: model.init(r, batch), jax.random.PRNGKey(0)))
    shapes = {
        path_str(p): list(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params["params"])
    }
    if os.environ.get("TLX_REGEN_GOLDEN"):
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(shapes.items())]
        GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    assert shapes == json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("variant", ["gpt1", "gpt2"])
def test_attention_is_causal(variant):
    model = gpt.GptForCausalLM(_cfg(variant))
    ids = _ids()
    params = _init(model, {"input_ids": ids})
    a = model.apply({"params": params}, ids, method=model.logits)
    b = model.apply({"params": params}, ids.at[:, 9].set(7), method=model.logits)
    np.testing.assert_array_equal(a[:, :9], b[:, :9])  # the past never sees the future
    assert not np.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("variant", ["gpt1", "gpt2"])
def test_packed_documents_do_not_attend_across(variant):
    """Row [A A A A A B B B B pad pad]: A's and B's states equal those of A and B alone, so
    attention never crosses a document and positions restart at each one."""
    model = gpt.GptDecoder(_cfg(variant))
    a, b = _ids(1, 5, seed=1), _ids(1, 4, seed=2)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], 1)
    doc = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 2])
    pos = jnp.asarray([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0]])
    variables = model.init(jax.random.PRNGKey(0), packed, deterministic=True)
    run = lambda ids, **kw: model.apply(variables, ids, deterministic=True, **kw)[0]  # noqa: E731
    out = run(packed, document_ids=doc, positions=pos)
    # Same math, keys summed over 11 positions instead of 5 / 4: reassociation rounding only
    # (<= 3 float32 ulps of the states' magnitude seen on every isa_sweep.py code path), held to
    # 16 ulps; a leak across documents moves the states by > 1e-3 (asserted below).
    ulps16 = 16 * np.finfo(np.float32).eps * float(np.abs(out[:, :9]).max())
    np.testing.assert_allclose(out[:, :5], run(a), rtol=0, atol=ulps16)
    np.testing.assert_allclose(out[:, 5:9], run(b), rtol=0, atol=ulps16)
    # Without the packing features, B would attend to A and sit at positions 5..8.
    assert not np.allclose(run(packed)[:, 5:9], run(b), atol=1e-3)
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "variant,temperature,top_k",
    [("gpt1", 0.0, 0), ("gpt2", 0.0, 0), ("gpt2", 1.0, 5), ("gpt1", 0.7, 0)],
)
def test_cached_decoding_equals_uncached(variant, temperature, top_k):
    model = gpt.GptForCausalLM(_cfg(variant))
    prompt = _ids(3, 6, seed=4)
    params = _init(model, {"input_ids": prompt})
    rng = jax.random.PRNGKey(7)
    kw = dict(max_new_tokens=12, temperature=temperature, top_k=top_k)
    cached = generate.generate(model, params, prompt, rng, **kw)
    uncached = generate.generate_uncached(model, params, prompt, rng, **kw)
    assert cached.shape == (3, 18)
    np.testing.assert_array_equal(cached[:, :6], prompt)
    np.testing.assert_array_equal(cached, uncached)
    if top_k:  # every sampled token is among the k most likely under the uncached model
        logits = model.apply({"params": params}, cached, method=model.logits)
        top = jax.lax.top_k(logits[:, 5:-1], top_k)[1]
        assert (top == cached[:, 6:, None]).any(-1).all()


def test_generation_length_is_checked():
    model = gpt.GptForCausalLM(_cfg())
    prompt = _ids(1, 60)
    params = _init(model, {"input_ids": prompt})
    with pytest.raises(ValueError, match="max_position=64"):
        generate.generate(model, params, prompt, jax.random.PRNGKey(0), max_new_tokens=10)


def test_next_token_targets_mask_document_ends_and_padding():
    batch = {
        "input_ids": jnp.asarray([[11, 12, 13, 21, 22, 0, 0]]),
        "document_ids": jnp.asarray([[1, 1, 1, 2, 2, 0, 0]]),
    }
    targets, weights = objectives.next_token_targets(batch)
    np.testing.assert_array_equal(targets[0, :4], [12, 13, 21, 22])
    np.testing.assert_array_equal(weights[0], [1, 1, 0, 1, 0, 0, 0])
    unpacked = {"input_ids": batch["input_ids"], "input_mask": jnp.asarray([[1] * 5 + [0] * 2])}
    np.testing.assert_array_equal(objectives.next_token_targets(unpacked)[1][0], [1] * 4 + [0] * 3)


@pytest.mark.parametrize("chunk", [4, 5, 16, 64])
def test_fused_tied_xent_matches_materialised_logits(chunk):
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(2, 13, 8)), jnp.float32)
    emb = jnp.asarray(rng.normal(size=(50, 8)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 50, (2, 13)), jnp.int32)
    weights = jnp.asarray(rng.integers(0, 2, (2, 13)), jnp.float32)

    def reference(h, emb):
        logits = h @ emb.T
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        correct = (logits.argmax(-1) == targets) * weights
        return (xent * weights).sum(), correct.sum()

    def fused(h, emb):
        return objectives.tied_xent(h, emb, targets, weights, chunk)

    np.testing.assert_allclose(fused(h, emb), reference(h, emb), rtol=1e-5)
    g_ref = jax.grad(lambda *a: reference(*a)[0], argnums=(0, 1))(h, emb)
    g_fused = jax.grad(lambda *a: 3.0 * fused(*a)[0], argnums=(0, 1))(h, emb)
    for a, b in zip(g_fused, g_ref, strict=True):
        np.testing.assert_allclose(a, 3.0 * np.asarray(b), rtol=1e-4, atol=1e-5)


def test_causal_lm_fused_and_materialised_paths_agree():
    model = gpt.GptForCausalLM(_cfg())
    batch = {"input_ids": _ids(), "input_mask": jnp.asarray([[1] * 16, [1] * 11 + [0] * 5])}
    params = _init(model, batch)

    def loss(p, chunk):
        return objectives.get("causal_lm", xent_chunk=chunk)(
            model.apply({"params": p}, batch)[0], batch
        )

    (fused, m_fused), g_fused = jax.value_and_grad(loss, has_aux=True)(params, 5)
    (full, m_full), g_full = jax.value_and_grad(loss, has_aux=True)(params, 0)
    np.testing.assert_allclose(fused, full, rtol=1e-5)
    assert float(m_fused["lm_loss"][1]) == float(m_full["lm_loss"][1]) == 15 + 10
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), g_fused, g_full
    )


def _task_batch():
    ids = _ids(2, 10, seed=5)
    mask = jnp.asarray([[1] * 7 + [0] * 3, [1] * 10])
    return {"input_ids": ids, "input_mask": mask, "label": jnp.asarray([0, 1])}


def test_classifier_reads_the_extract_token():
    """The classifier reads the last real token (<e>): padding after it changes nothing,
    the token itself does."""
    model = gpt.classifier(_cfg(), num_classes=3)
    batch = _task_batch()
    params = _init(model, batch)
    logits = lambda b: model.apply({"params": params}, b)[0]["logits"]  # noqa: E731
    base = logits(batch)
    padded = {**batch, "input_ids": batch["input_ids"].at[0, 8].set(9)}
    np.testing.assert_allclose(logits(padded), base, atol=1e-6)
    extract = {**batch, "input_ids": batch["input_ids"].at[0, 6].set(9)}
    assert not np.allclose(logits(extract)[0], base[0])
    np.testing.assert_allclose(logits(extract)[1], base[1], atol=1e-6)


@pytest.mark.parametrize("name,model_cls", [
    ("classification", gpt.classifier),
    ("tagging", gpt.tagger),
])  # fmt: skip
def test_lm_coef_adds_the_auxiliary_lm_loss(name, model_cls):
    model = model_cls(_cfg(), num_classes=3)
    batch = _task_batch()
    batch["labels"] = jnp.ones((2, 10), jnp.int32)
    batch["label_weights"] = batch["input_mask"]
    params = _init(model, batch)
    outputs, _ = model.apply({"params": params}, batch)
    task_loss, _ = objectives.get(name)(outputs, batch)
    loss, metrics = objectives.get(name, lm_coef=0.5)(outputs, batch)
    lm_loss, _ = objectives.causal_lm(outputs, batch)
    np.testing.assert_allclose(loss, task_loss + 0.5 * lm_loss, rtol=1e-6)
    assert {"task_loss", "lm_loss", "lm_accuracy"} <= set(metrics)
    # The LM term reaches the decoder through the tied embedding's gradient.
    loss_fn = lambda p: objectives.get(name, 0.5)(model.apply({"params": p}, batch)[0], batch)[0]  # noqa: E731
    grad = jax.jit(jax.grad(loss_fn))(params)
    assert float(jnp.abs(grad["encoder"]["token_embed"]["embedding"]).sum()) > 0
    with pytest.raises(ValueError, match="lm_coef"):
        objectives.get("causal_lm", lm_coef=0.5)
