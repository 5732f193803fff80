"""Token, position and segment embedding tables, with a tied-decoder `attend`."""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

# Reference BERT/GPT init: truncated normal (cut at 2 std) with stddev 0.02 before truncation.
default_init = nn.initializers.truncated_normal(stddev=0.02)


class Embed(nn.Module):
    """A [N, D] lookup table whose rows shard along `axes[0]` of the logical rules."""

    num_embeddings: int
    features: int
    axes: tuple[str, str] = ("vocab", "embed")
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    embedding_init: Callable = default_init

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, self.axes),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
        # [..., ] int -> [..., D]
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: jnp.ndarray) -> jnp.ndarray:
        """Scores [..., D] states against every row: the tied output projection, [..., N]."""
        return jnp.einsum("...d,nd->...n", x.astype(self.dtype), self.embedding.astype(self.dtype))
