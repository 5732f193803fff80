"""Multi-head dot-product attention with logically named parameters."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx.layers.embed import default_init

# Additive mask value: large but finite, so fully masked rows give a uniform softmax, not NaN.
MASK_VALUE = -1e9


def padding_bias(mask: jnp.ndarray) -> jnp.ndarray:
    """[B, L] 1/0 key mask -> [B, 1, 1, L] additive attention bias."""
    return jnp.where(mask[:, None, None, :] > 0, 0.0, MASK_VALUE).astype(jnp.float32)


class MultiHeadAttention(nn.Module):
    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = default_init
    out_init: Callable | None = None  # None: kernel_init (GPT-2 scales it by 1/sqrt(2 N))

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        bias: jnp.ndarray | None,
        *,
        deterministic: bool,
        decode: bool = False,
        cache_index: jnp.ndarray | int = 0,
    ) -> jnp.ndarray:
        """x [B, L, D]; bias broadcastable to [B, H, L, L] (additive). decode=True: causal
        attention of these L new positions, written at `cache_index` (the caller's count of
        positions already cached), over a key/value cache (the `cache` collection, shaped by an
        init call on the full length); `bias` is ignored."""
        d, h, dh = x.shape[-1], self.num_heads, self.head_dim

        def weight(name, shape, axes, init):
            return self.param(name, nn.with_logical_partitioning(init, axes), shape).astype(
                self.dtype
            )

        def project(name):  # [B, L, D] -> [B, L, H, Dh]
            kernel = weight(
                f"{name}_kernel", (d, h, dh), ("embed", "heads", "kv"), self.kernel_init
            )
            b = weight(f"{name}_bias", (h, dh), ("heads", "kv"), nn.initializers.zeros)
            y = jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), kernel) + b
            return nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))

        q, k, v = project("query"), project("key"), project("value")
        if decode:
            k, v, bias = self._cached(k, v, cache_index)
        q = q / jnp.sqrt(dh).astype(self.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias  # [B, H, Lq, Lk]
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [B, L, H, Dh]
        ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))
        out_kernel = weight(
            "out_kernel", (h, dh, d), ("heads", "kv", "embed"), self.out_init or self.kernel_init
        )
        out_bias = weight("out_bias", (d,), ("embed",), nn.initializers.zeros)
        return jnp.einsum("blhk,hkd->bld", ctx, out_kernel) + out_bias  # [B, L, D]

    def _cached(self, k, v, i):
        """Writes this call's keys/values [B, T, H, Dh] at position i; returns the whole cache
        [B, Lmax, H, Dh] twice and the causal bias [1, 1, T, Lmax] of the T queries."""
        ready = self.has_variable("cache", "cached_key")
        ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        t = k.shape[1]
        if not ready:  # the init call only shapes the cache; attend within the chunk
            return k, v, causal_bias(t)
        ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), (0, i, 0, 0))
        cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), (0, i, 0, 0))
        query_pos = i + jnp.arange(t)  # [T]
        allowed = jnp.arange(ck.value.shape[1])[None, :] <= query_pos[:, None]  # [T, Lmax]
        bias = jnp.where(allowed, 0.0, MASK_VALUE).astype(jnp.float32)[None, None]
        return ck.value, cv.value, bias


def causal_bias(length: int) -> jnp.ndarray:
    """[1, 1, L, L] additive bias letting position q attend to keys k <= q."""
    allowed = jnp.tril(jnp.ones((length, length), bool))
    return jnp.where(allowed, 0.0, MASK_VALUE).astype(jnp.float32)[None, None]


def document_bias(document_ids: jnp.ndarray, causal: bool = True) -> jnp.ndarray:
    """Packed rows: [B, L] document ids (0 = padding) -> [B, 1, L, L] additive bias letting a
    query attend only to keys of its own document (and, if causal, not after it). Padding
    queries attend to padding keys only, so their rows stay finite."""
    same = document_ids[:, :, None] == document_ids[:, None, :]  # [B, Lq, Lk]
    if causal:
        length = document_ids.shape[1]
        same = same & jnp.tril(jnp.ones((length, length), bool))[None]
    return jnp.where(same, 0.0, MASK_VALUE).astype(jnp.float32)[:, None]
