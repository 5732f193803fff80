"""ELMo's task-specific layer weighting (Peters et al. 2018, eq. 1):

    ELMo_k = gamma * sum_j s_j h_{k,j},   s = softmax(w)

over the biLM's layers h_{k,0..L}. `w` starts at 0 (an even average) and `gamma` at 1. The paper
regularises w with lambda ||w||^2 (lambda = 1e-3 or 1; large lambda keeps the mix near the
average); `__call__` returns that penalty beside the mix so the task objective adds it, since
the L2 term belongs to the loss, not the forward pass.

`do_layer_norm` normalises each layer before weighting, as allennlp's ScalarMix does: one mean
and variance per layer over every unmasked position and feature of the batch (not per token).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def _masked_normalize(h: jnp.ndarray, mask: jnp.ndarray | None, eps: float = 1e-12):
    """(h - mean) / std with one mean / std over the unmasked positions of h [B, L, D]; the
    statistics in float32 (a sum over the whole batch), the result in h's dtype."""
    dtype, h = h.dtype, h.astype(jnp.float32)
    w = jnp.ones(h.shape[:-1], h.dtype) if mask is None else mask.astype(h.dtype)
    w = jnp.broadcast_to(w[..., None], h.shape)  # [B, L, D]
    n = jnp.maximum(w.sum(), 1.0)
    mean = (h * w).sum() / n
    var = (((h - mean) * w) ** 2).sum() / n
    return ((h - mean) * jax.lax.rsqrt(var + eps)).astype(dtype)


class ScalarMix(nn.Module):
    """[h_0, ..., h_{K-1}] each [B, L, D] -> (gamma * sum_k softmax(w)_k h_k [B, L, D],
    l2_coef * sum(w^2) [])."""

    num_layers: int
    l2_coef: float = 0.0
    do_layer_norm: bool = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, layers, mask: jnp.ndarray | None = None):
        if len(layers) != self.num_layers:
            raise ValueError(f"ScalarMix expects {self.num_layers} layers, got {len(layers)}")
        part = nn.with_logical_partitioning
        w = self.param(
            "scalars", part(nn.initializers.zeros, (None,)), (self.num_layers,), self.param_dtype
        )
        gamma = self.param("gamma", part(nn.initializers.ones, ()), (), self.param_dtype)
        weights = jax.nn.softmax(w.astype(jnp.float32))  # [K]
        if self.do_layer_norm:
            layers = [_masked_normalize(h, mask) for h in layers]
        mixed = sum(weights[k].astype(h.dtype) * h for k, h in enumerate(layers))
        return gamma.astype(mixed.dtype) * mixed, l2_penalty(w, self.l2_coef)


def l2_penalty(scalars: jnp.ndarray, l2_coef: float) -> jnp.ndarray:
    """The paper's lambda ||w||^2 on the raw (pre-softmax) scalars, as bilm-tf's weight_layers."""
    return l2_coef * jnp.sum(jnp.square(scalars.astype(jnp.float32)))
