"""MultiHeadAttention through jax.nn.dot_product_attention: equal to the attention it replaced
(kept here as `PreviousAttention`) for BERT padding, packed GPT documents and KV-cache decoding,
and to a float64 reference; its dropout path is bit-identical; impl selection fails loudly."""

import sys
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlx.layers import attention, transformer
from tlx.layers.attention import MASK_VALUE, AttentionMask, MultiHeadAttention
from tlx.layers.embed import default_init
from tlx.models import bert, gpt

parity = sys.modules["tlx_tests_parity"]
B, L, D, H, DH = 2, 8, 16, 2, 8


class PreviousAttention(nn.Module):
    """The attention before jax.nn.dot_product_attention (additive float32 bias, q scaled in
    the compute dtype), same parameter names; an AttentionMask is turned into that bias."""

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32  # float32 only: what the tests compare
    kernel_init: Callable = default_init
    out_init: Callable | None = None
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, x, bias, *, deterministic, decode=False, cache_index=0):
        d, h, dh = x.shape[-1], self.num_heads, self.head_dim

        def weight(name, shape, axes, init):
            return self.param(name, nn.with_logical_partitioning(init, axes), shape).astype(
                self.dtype
            )

        def project(name):
            kernel = weight(f"{name}_kernel", (d, h, dh), ("embed", "heads", "kv"), default_init)
            b = weight(f"{name}_bias", (h, dh), ("heads", "kv"), nn.initializers.zeros)
            return jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), kernel) + b

        q, k, v = project("query"), project("key"), project("value")
        if decode:
            k, v, bias = self._cached(k, v, cache_index)
        if isinstance(bias, AttentionMask):
            allowed = bias.allowed(q.shape[1], k.shape[1])
            bias = jnp.where(allowed, 0.0, MASK_VALUE).astype(jnp.float32)
        q = q / jnp.sqrt(dh).astype(self.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        out_kernel = weight(
            "out_kernel", (h, dh, d), ("heads", "kv", "embed"), self.out_init or self.kernel_init
        )
        out_bias = weight("out_bias", (d,), ("embed",), nn.initializers.zeros)
        return jnp.einsum("blhk,hkd->bld", ctx, out_kernel) + out_bias

    def _cached(self, k, v, i):
        ready = self.has_variable("cache", "cached_key")
        ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        t = k.shape[1]
        if not ready:
            return k, v, attention.causal_bias(t)
        ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), (0, i, 0, 0))
        cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), (0, i, 0, 0))
        allowed = jnp.arange(ck.value.shape[1])[None, :] <= (i + jnp.arange(t))[:, None]
        return ck.value, cv.value, jnp.where(allowed, 0.0, MASK_VALUE)[None, None]


def _reference64(params, x, allowed) -> np.ndarray:
    """The same attention in float64 numpy; allowed: bool broadcastable to [B, H, Lq, Lk]."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    q, k, v = (
        np.einsum("bld,dhk->blhk", x, p[f"{n}_kernel"]) + p[f"{n}_bias"]
        for n in ("query", "key", "value")
    )
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    logits = np.where(np.isinf(logits).all(-1, keepdims=True), 0.0, logits)  # empty: uniform
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = np.einsum("bhqk,bkhd->bqhd", probs, v)
    return np.einsum("blhk,hkd->bld", ctx, p["out_kernel"]) + p["out_bias"]


def _x(seed=0, shape=(B, L, D)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _params(seed=1):
    """Random values everywhere (biases too: zero biases would hide a dropped one), at a scale
    that gives logits of order 1 (std-1 weights give |logits| ~ 40: one-hot softmax rows)."""
    module = MultiHeadAttention(H, DH)
    shapes = nn.unbox(module.init(jax.random.PRNGKey(0), _x(), None, deterministic=True))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), jnp.float32), shapes["params"]
    )


def _masks():
    """BERT padding (rows of 8 and 5 real tokens) and packed GPT rows [A A A B B B B pad]."""
    input_mask = jnp.asarray([[1] * 8, [1] * 5 + [0] * 3])
    docs = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0], [1] * 6 + [0] * 2])
    return {
        "padding": (attention.padding_mask(input_mask), attention.padding_bias(input_mask)),
        "packed": (attention.document_mask(docs), attention.document_bias(docs)),
        "causal": (attention.causal_mask(), attention.causal_bias(L)),
    }


def _close(a, b, rel=1e-6):
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * max(1.0, float(jnp.abs(b).max())))


def _check_parity(name, out, prev, params, x, mask):
    """1e-6 of the output's scale from the previous attention (float32 reassociation: the two
    differ by ~3e-7), and within tests/parity.py's float64-referenced bound."""
    _close(out, prev)
    ref64 = _reference64(params, x, np.asarray(mask.allowed(L, L)))
    ref32 = PreviousAttention(H, DH).apply({"params": params}, x, mask, deterministic=True)
    check = parity.Checker()
    check(name, out, ref64, ref32)
    check.assert_ok()


@pytest.mark.parametrize("kind", ["padding", "packed", "causal"])
def test_equals_previous_attention_and_float64(kind):
    params, x = _params(), _x()
    mask, bias = _masks()[kind]
    prev = PreviousAttention(H, DH).apply({"params": params}, x, bias, deterministic=True)
    run = jax.jit(lambda m: MultiHeadAttention(H, DH).apply({"params": params}, x, m,
                                                            deterministic=True))  # fmt: skip
    for m in (mask, bias):  # the AttentionMask and the additive helper it replaces
        _check_parity(kind, run(m), prev, params, x, mask)


def test_deterministic_path_calls_dot_product_attention(monkeypatch):
    params, x = _params(), _x()
    mask = _masks()["packed"][0]
    calls = []
    original = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda *a, **kw: calls.append(kw) or original(*a, **kw))  # fmt: skip
    module = MultiHeadAttention(H, DH, dropout_rate=0.1)
    module.apply({"params": params}, x, mask, deterministic=True)
    assert [(c["implementation"], c["is_causal"], c["mask"].shape) for c in calls] == [
        ("xla", True, (B, 1, L, L))
    ]
    rngs = {"dropout": jax.random.PRNGKey(3)}
    module.apply({"params": params}, x, mask, deterministic=False, rngs=rngs)
    assert len(calls) == 1  # dropout on the probabilities: the explicit path


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dropout_path_is_bit_identical_to_previous(dtype):
    params, x = _params(), _x()
    mask, bias = _masks()["packed"]
    rngs = {"dropout": jax.random.PRNGKey(3)}
    kw = dict(deterministic=False, rngs=rngs)
    new = MultiHeadAttention(H, DH, dropout_rate=0.3, dtype=dtype)
    old = PreviousAttention(H, DH, dropout_rate=0.3, dtype=dtype)
    a = new.apply({"params": params}, x, mask, **kw)
    b = old.apply({"params": params}, x, bias, **kw)
    if dtype == jnp.float32:
        np.testing.assert_array_equal(a, b)
    else:  # the new path's bf16 logits are float32 dot products, the old rounded them to bf16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=0.05, atol=0.05 * float(jnp.abs(b).max()))  # fmt: skip
    assert not np.allclose(a, new.apply({"params": params}, x, mask, deterministic=True))


def test_fully_masked_rows_stay_finite():
    params, x = _params(), _x()
    allowed = np.ones((B, 1, L, L), bool)
    allowed[0, 0, 3] = False  # query 3 of row 0 may see no key
    mask = AttentionMask(mask=jnp.asarray(allowed))
    for dropout, det in ((0.0, True), (0.5, False)):
        out = MultiHeadAttention(H, DH, dropout_rate=dropout).apply(
            {"params": params}, x, mask, deterministic=det, rngs={"dropout": jax.random.key(0)}
        )
        assert np.isfinite(np.asarray(out)).all()
    ref = _reference64(params, x, allowed)  # an empty row averages every value (uniform)
    det = MultiHeadAttention(H, DH).apply({"params": params}, x, mask, deterministic=True)
    np.testing.assert_allclose(det, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_bf16_softmax_runs_in_float32():
    params, x = _params(), _x()
    mask = _masks()["packed"][0]
    module = MultiHeadAttention(H, DH, dtype=jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda p: module.apply({"params": p}, x, mask, deterministic=True))
    eqns = _eqns(jaxpr(params).jaxpr)
    exps = [e for e in eqns if e.primitive.name == "exp"]
    assert exps and all(e.invars[0].aval.dtype == jnp.float32 for e in exps)


def _eqns(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for sub in jax.core.jaxprs_in_params(e.params):
            yield from _eqns(sub)


def test_impl_selection_fails_loudly_on_cpu():
    params, x = _params(), _x()
    run = lambda **kw: MultiHeadAttention(H, DH, **kw).apply(  # noqa: E731
        {"params": params}, x, None, deterministic=True
    )
    with pytest.raises(ValueError, match=r"'flash'.*\('xla', 'cudnn'\)"):
        run(attention_impl="flash")
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        run(attention_impl="cudnn")
    with pytest.raises(ValueError, match="CUDA GPU only.*'cpu'"):
        run(attention_impl="cudnn", dtype=jnp.bfloat16)


def _swap_previous(monkeypatch):
    monkeypatch.setattr(transformer, "MultiHeadAttention", PreviousAttention)


def test_bert_encoder_equals_previous_attention(monkeypatch):
    cfg = bert.config_for_size("tiny", vocab_size=100, dropout_rate=0.0)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 100, (2, 12)), jnp.int32)
    seg = jnp.zeros_like(ids)
    mask = jnp.asarray([[1] * 12, [1] * 7 + [0] * 5], jnp.int32)
    model = bert.BertEncoder(cfg)
    variables = model.init(jax.random.PRNGKey(0), ids, seg, mask, deterministic=True)
    new = model.apply(variables, ids, seg, mask, deterministic=True)[1]["hidden_states"]
    _swap_previous(monkeypatch)
    old = model.apply(variables, ids, seg, mask, deterministic=True)[1]["hidden_states"]
    for a, b in zip(new, old, strict=True):
        _close(a, b)


def _gpt(variant="gpt2"):
    cfg = gpt.config_for_size("tiny", variant, vocab_size=100, max_position=32, dropout_rate=0.0,
                              attention_dropout_rate=0.0)  # fmt: skip
    return gpt.GptForCausalLM(cfg)


def test_packed_gpt_equals_previous_attention(monkeypatch):
    model = _gpt()
    ids = jnp.asarray(np.random.default_rng(1).integers(5, 100, (2, 12)), jnp.int32)
    docs = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3, [1] * 12])
    pos = jnp.asarray([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0], list(range(12))])
    params = nn.unbox(model.init(jax.random.PRNGKey(0), {"input_ids": ids})["params"])
    run = lambda: model.apply(  # noqa: E731
        {"params": params}, ids, document_ids=docs, positions=pos, method=model.logits
    )
    new = run()
    _swap_previous(monkeypatch)
    old = run()
    _close(new, old)


def _decode_logits(model, params, ids):
    """Token-by-token logits [B, T, V] through the KV cache, as tlx.generate feeds it."""
    cache = model.init(jax.random.PRNGKey(0), ids, decode=True, method=model.logits)["cache"]
    cache = jax.tree.map(jnp.zeros_like, cache)

    @jax.jit
    def step(cache, token):  # [B, 1] -> [B, V]
        variables = {"params": params, "cache": cache}
        logits, mutated = model.apply(
            variables, token, decode=True, method=model.logits, mutable=["cache"]
        )
        return mutated["cache"], logits[:, 0]

    out = []
    for t in range(ids.shape[1]):
        cache, logits = step(cache, ids[:, t : t + 1])
        out.append(logits)
    return jnp.stack(out, 1)


@pytest.mark.parametrize("variant", ["gpt1", "gpt2"])
def test_kv_cache_decoding_equals_full_forward(variant, monkeypatch):
    model = _gpt(variant)
    ids = jnp.asarray(np.random.default_rng(2).integers(5, 100, (2, 10)), jnp.int32)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), {"input_ids": ids})["params"])
    full = model.apply({"params": params}, ids, method=model.logits)
    decoded = _decode_logits(model, params, ids)
    _close(decoded, full)
    _swap_previous(monkeypatch)
    _close(decoded, _decode_logits(model, params, ids))
