"""Small modules that sit on an encoder's [B, L, D] states: MLM, NSP, classification."""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from tlx.layers.embed import default_init
from tlx.layers.transformer import activation, layer_norm


def gather_positions(states: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """[B, L, D] states, [B, P] int positions -> [B, P, D]."""
    return jnp.take_along_axis(states, positions[..., None].astype(jnp.int32), axis=1)


def dense(features: int, axes: tuple[str, str], name: str, dtype=jnp.float32) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(default_init, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


class MlmHead(nn.Module):
    """dense -> GELU -> LayerNorm -> tied decoder (`decode`, the token embedding) + output bias."""

    vocab_size: int
    gelu: str = "tanh"
    layer_norm_eps: float = 1e-12
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, states: jnp.ndarray, decode: Callable[[jnp.ndarray], jnp.ndarray]):
        d = states.shape[-1]
        h = dense(d, ("embed", "mlp"), "transform", self.dtype)(states)
        h = activation(self.gelu)(h)
        h = layer_norm(self.layer_norm_eps, "transform_ln", self.dtype)(h)
        bias = self.param(
            "output_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (self.vocab_size,),
        )
        return (decode(h) + bias).astype(jnp.float32)  # [..., V]


class ClassifierHead(nn.Module):
    """dropout -> dense over a [B, D] feature (BERT's pooled [CLS]); also the NSP head."""

    num_classes: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
        x = nn.Dropout(self.dropout_rate)(features, deterministic=deterministic)
        return dense(self.num_classes, ("embed", "classes"), "dense")(x).astype(jnp.float32)
