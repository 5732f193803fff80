"""Multi-head dot-product attention with logically named parameters, computed by
`jax.nn.dot_product_attention`: `attention_impl="xla"` anywhere, `"cudnn"` (cuDNN's flash
attention) on a CUDA GPU in bfloat16 / float16.

Masks: an `AttentionMask` says which keys each query may see in the forms that function takes (a
boolean mask, `causal`, key lengths), so cuDNN can skip masked blocks instead of reading an
[B, H, L, L] bias. `padding_mask`, `causal_mask` and `document_mask` build them. The additive
helpers (`padding_bias`, `causal_bias`, `document_bias`) still work as `mask` arguments.

Attention-probability dropout: `jax.nn.dot_product_attention` has none, so when it is active
(rate > 0, not deterministic) the probabilities are formed explicitly, with the same ops and the
same `nn.Dropout` (same name, same rng stream) as before the switch, so training runs are
bit-compatible; cuDNN refuses that case rather than silently running XLA's kernel instead.
"""

from collections.abc import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx.layers.embed import default_init

# Additive mask value: large but finite, so fully masked rows give a uniform softmax, not NaN.
MASK_VALUE = -1e9
IMPLEMENTATIONS = ("xla", "cudnn")


@flax.struct.dataclass
class AttentionMask:
    """Keys a query may attend to: those allowed by `mask` (bool, broadcastable to
    [B, H, Lq, Lk]; None = all), not after it if `causal`. `kv_lengths` ([B] int32) restates a
    padding `mask` whose padding is at the end of each row as lengths, the form cuDNN's kernel
    takes; the XLA path reads `mask` and so is exact for any mask."""

    mask: jnp.ndarray | None = None
    kv_lengths: jnp.ndarray | None = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)

    def allowed(self, lq: int, lk: int) -> jnp.ndarray:
        """bool, broadcastable to [B, H, Lq, Lk]; causal = key index <= query index, as
        jax.nn.dot_product_attention's is_causal."""
        out = jnp.ones((1, 1, lq, lk), bool) if self.mask is None else self.mask
        if self.causal:
            out = out & jnp.tril(jnp.ones((lq, lk), bool))[None, None]
        return out


def padding_mask(input_mask: jnp.ndarray) -> AttentionMask:
    """[B, L] 1/0 key mask, padding at the end of the row (as every tlx pipeline pads) ->
    padding keys hidden from every query. Padding queries still see the real keys."""
    keep = input_mask > 0
    return AttentionMask(mask=keep[:, None, None, :], kv_lengths=keep.sum(-1, dtype=jnp.int32))


def causal_mask() -> AttentionMask:
    return AttentionMask(causal=True)


def document_mask(document_ids: jnp.ndarray, causal: bool = True) -> AttentionMask:
    """Packed rows: [B, L] document ids (0 = padding) -> each query sees only keys of its own
    document (padding queries see padding keys, so no row is empty), and if causal none after
    it."""
    same = document_ids[:, :, None] == document_ids[:, None, :]  # [B, Lq, Lk]
    return AttentionMask(mask=same[:, None], causal=causal)


def padding_bias(mask: jnp.ndarray) -> jnp.ndarray:
    """[B, L] 1/0 key mask -> [B, 1, 1, L] additive attention bias."""
    return jnp.where(mask[:, None, None, :] > 0, 0.0, MASK_VALUE).astype(jnp.float32)


def causal_bias(length: int) -> jnp.ndarray:
    """[1, 1, L, L] additive bias letting position q attend to keys k <= q."""
    allowed = jnp.tril(jnp.ones((length, length), bool))
    return jnp.where(allowed, 0.0, MASK_VALUE).astype(jnp.float32)[None, None]


def document_bias(document_ids: jnp.ndarray, causal: bool = True) -> jnp.ndarray:
    """The additive form of `document_mask`: [B, L] document ids -> [B, 1, L, L] bias."""
    length = document_ids.shape[1]
    allowed = document_mask(document_ids, causal).allowed(length, length)  # [B, 1, L, L]
    return jnp.where(allowed, 0.0, MASK_VALUE).astype(jnp.float32)


def check_impl(impl: str) -> None:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention_impl {impl!r}; expected one of {IMPLEMENTATIONS}")


class MultiHeadAttention(nn.Module):
    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32  # compute dtype; logits and softmax stay float32
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = default_init
    out_init: Callable | None = None  # None: kernel_init (GPT-2 scales it by 1/sqrt(2 N))
    attention_impl: str = "xla"  # IMPLEMENTATIONS

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        mask: AttentionMask | jnp.ndarray | None,
        *,
        deterministic: bool,
        decode: bool = False,
        cache_index: jnp.ndarray | int = 0,
    ) -> jnp.ndarray:
        """x [B, L, D]; mask an AttentionMask, an additive float bias broadcastable to
        [B, H, L, L], or None (every key). decode=True: causal attention of these L new
        positions, written at `cache_index` (the caller's count of positions already cached),
        over a key/value cache (the `cache` collection, shaped by an init call on the full
        length); `mask` is ignored."""
        check_impl(self.attention_impl)
        d, h, dh = x.shape[-1], self.num_heads, self.head_dim
        dropout = self.dropout_rate > 0 and not deterministic
        # Decoding attends from a few queries over the cache: memory-bound, with no masked
        # tiles for a flash kernel to skip.
        impl = "xla" if decode else self.attention_impl
        if impl == "cudnn":
            _check_cudnn(self.dtype, dropout)

        def weight(name, shape, axes, init):
            init = nn.with_logical_partitioning(init, axes)
            return self.param(name, init, shape, self.param_dtype).astype(self.dtype)

        def project(name):  # [B, L, D] -> [B, L, H, Dh]
            kernel = weight(
                f"{name}_kernel", (d, h, dh), ("embed", "heads", "kv"), self.kernel_init
            )
            b = weight(f"{name}_bias", (h, dh), ("heads", "kv"), nn.initializers.zeros)
            y = jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), kernel) + b
            return nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))

        q, k, v = project("query"), project("key"), project("value")
        if decode:
            k, v, mask = self._cached(k, v, cache_index)
        if impl == "cudnn":
            ctx = _fused(q, k, v, mask, "cudnn", scale=dh**-0.5)
        else:
            # Scaling q (not the logits) in the compute dtype keeps float32 bit-identical to the
            # attention before jax.nn.dot_product_attention; for Dh = 4^n it is exact in bf16.
            q = q / jnp.sqrt(dh).astype(self.dtype)
            if dropout:
                ctx = self._explicit(q, k, v, mask, deterministic)
            else:
                ctx = _fused(q, k, v, mask, "xla", scale=1.0)
        ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))  # [B, L, H, Dh]
        out_kernel = weight(
            "out_kernel", (h, dh, d), ("heads", "kv", "embed"), self.out_init or self.kernel_init
        )
        out_bias = weight("out_bias", (d,), ("embed",), nn.initializers.zeros)
        return jnp.einsum("blhk,hkd->bld", ctx, out_kernel) + out_bias  # [B, L, D]

    def _explicit(self, q, k, v, mask, deterministic):
        """softmax(q k^T + mask) v with dropout on the probabilities; logits float32."""
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        if isinstance(mask, AttentionMask):  # [B, H, Lq, Lk]
            logits = jnp.where(mask.allowed(*logits.shape[2:]), logits, MASK_VALUE)
        elif mask is not None:
            logits = logits + mask
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v)

    def _cached(self, k, v, i):
        """Writes this call's keys/values [B, T, H, Dh] at position i; returns the whole cache
        [B, Lmax, H, Dh] twice and the mask [1, 1, T, Lmax] of the T queries."""
        ready = self.has_variable("cache", "cached_key")
        ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        t = k.shape[1]
        if not ready:  # the init call only shapes the cache; attend within the chunk
            return k, v, causal_mask()
        ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), (0, i, 0, 0))
        cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), (0, i, 0, 0))
        query_pos = i + jnp.arange(t)  # [T]
        allowed = jnp.arange(ck.value.shape[1])[None, :] <= query_pos[:, None]  # [T, Lmax]
        return ck.value, cv.value, AttentionMask(mask=allowed[None, None])


def _fused(q, k, v, mask, impl: str, scale: float) -> jnp.ndarray:
    """jax.nn.dot_product_attention on [B, L, H, Dh] q/k/v with `mask` in the form `impl` takes."""
    lq, lk = q.shape[1], k.shape[1]
    kw = {}
    if isinstance(mask, AttentionMask):
        kw["is_causal"] = mask.causal
        if impl == "cudnn" and mask.kv_lengths is not None:
            kw["key_value_seq_lengths"] = mask.kv_lengths
        elif mask.mask is not None:
            m = mask.mask  # cuDNN's bias must span [*, *, Lq, Lk]
            kw["mask"] = jnp.broadcast_to(m, (*m.shape[:2], lq, lk)) if impl == "cudnn" else m
    elif mask is not None:
        if impl == "cudnn":
            mask = jnp.broadcast_to(mask, (*mask.shape[:2], lq, lk)).astype(q.dtype)
        kw["bias"] = mask
    return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=impl, **kw)


def _check_cudnn(dtype, dropout: bool) -> None:
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        raise ValueError(
            f"attention_impl='cudnn' needs model.dtype bfloat16 or float16 (cuDNN flash "
            f"attention has no float32 kernel); got {jnp.dtype(dtype).name}"
        )
    if jax.default_backend() != "gpu":
        raise ValueError(
            f"attention_impl='cudnn' runs on a CUDA GPU only; this process's backend is "
            f"{jax.default_backend()!r}: use attention_impl='xla'"
        )
    if dropout:
        raise ValueError(
            "attention_impl='cudnn' has no attention-probability dropout here (its kernel's "
            "seed is fixed at trace time): set attention_dropout_rate=0 or attention_impl='xla'"
        )
