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
        """Scores [..., D] states against every row: the tied output projection, [..., N]
        float32 (logits are a float32 island of tlx.precision: products in `dtype`, summed in
        float32)."""
        # The table's embed dim all-gathered first (as ZeRO-3 does anyway): with it split over
        # fsdp, the axis the batch also uses, XLA computed this einsum's gradient wrong on a
        # (2, 2, 2) data x fsdp x model mesh (tests/test_fsdp.py). A no-op without fsdp.
        table = nn.with_logical_constraint(self.embedding, (self.axes[0], None))
        x, table = x.astype(self.dtype), table.astype(self.dtype)
        return jnp.einsum("...d,nd->...n", x, table, preferred_element_type=jnp.float32)
