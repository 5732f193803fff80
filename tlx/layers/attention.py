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

    @nn.compact
    def __call__(self, x: jnp.ndarray, bias: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
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
        q = q / jnp.sqrt(dh).astype(self.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias  # [B, H, Lq, Lk]
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [B, L, H, Dh]
        ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))
        out_kernel = weight("out_kernel", (h, dh, d), ("heads", "kv", "embed"), self.kernel_init)
        out_bias = weight("out_bias", (d,), ("embed",), nn.initializers.zeros)
        return jnp.einsum("blhk,hkd->bld", ctx, out_kernel) + out_bias  # [B, L, D]
