"""ELMo's context-independent token encoder (Peters et al. 2018, after Kim et al. 2016 and
Jozefowicz et al. 2016): characters -> embeddings -> one 1-D convolution per width, max-pooled
over the word -> highway layers -> linear projection. It gives every word, seen or not, a vector.

Follows the released biLM (allenai/bilm-tf `_build_word_char_embeddings`):
  * conv -> max over positions -> activation (relu in the released options), in that order;
  * max-pooling runs over all 50 positions, padding included: the padding id 0 has a learned
    embedding like any character, and a [PAD] token (all zeros) still gets a vector, which the
    caller masks;
  * highway: y = g * relu(W_h x + b_h) + (1 - g) * x with the gate g = sigmoid(W_g x + b_g) and
    b_g initialised to -2, so g starts near 0.12 and each layer starts close to the identity
    (information carried through while the transform learns);
  * inits: chars uniform(-1, 1); relu convolutions normal(sqrt(1 / (width * char_dim))) (tanh:
    uniform(+-0.05)); highway and projection kernels normal(sqrt(1 / fan_in)); biases 0.
The projection is always applied (bilm-tf skips it when sum(filters) == output_dim).

Logical axes: the 261-row char table is (`char_vocab`, `embed`); `char_vocab` has no entry in
partitioning.DEFAULT_RULES, so it is replicated (flax maps unknown names to None) instead of
being split over `model` like a word vocabulary. Filter and highway widths are `mlp`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

ELMO_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def _uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def _normal_fan_in(fan_in: int):
    return nn.initializers.normal(stddev=(1.0 / fan_in) ** 0.5)


class Highway(nn.Module):
    """y = g * relu(W_h x + b_h) + (1 - g) * x, g = sigmoid(W_g x + b_g); x, y [..., F]."""

    carry_bias: float = -2.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        f = x.shape[-1]
        part = nn.with_logical_partitioning

        def dense(name, bias):
            return nn.Dense(
                f,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=part(_normal_fan_in(f), ("embed", "mlp")),
                bias_init=part(nn.initializers.constant(bias), ("mlp",)),
                name=name,
            )

        gate = jax.nn.sigmoid(dense("gate", self.carry_bias)(x))
        transform = jax.nn.relu(dense("transform", 0.0)(x))
        return gate * transform + (1.0 - gate) * x


class CharCNN(nn.Module):
    """char_ids [B, L, C] -> token vectors [B, L, output_dim]."""

    char_vocab: int = 261
    char_dim: int = 16
    filters: tuple[tuple[int, int], ...] = ELMO_FILTERS  # (width, number of filters)
    highway_layers: int = 2
    output_dim: int = 512
    activation: str = "relu"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, char_ids: jnp.ndarray) -> jnp.ndarray:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; one of {list(ACTIVATIONS)}")
        part = nn.with_logical_partitioning
        table = self.param(
            "char_embedding",
            part(_uniform(1.0), ("char_vocab", "embed")),
            (self.char_vocab, self.char_dim),
            self.param_dtype,
        )
        batch_shape, chars = char_ids.shape[:-1], char_ids.shape[-1]
        x = jnp.take(table, char_ids.reshape(-1, chars), axis=0).astype(self.dtype)  # [N, C, d]
        pooled = []
        for width, num in self.filters:
            if width > chars:
                raise ValueError(f"filter width {width} exceeds the {chars} characters per token")
            init = (
                _normal_fan_in(width * self.char_dim)
                if self.activation == "relu"
                else _uniform(0.05)
            )
            conv = nn.Conv(
                num,
                (width,),
                padding="VALID",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=part(init, (None, "embed", "mlp")),
                bias_init=part(nn.initializers.zeros, ("mlp",)),
                name=f"conv_{width}",
            )(x)  # [N, C - width + 1, num]
            pooled.append(ACTIVATIONS[self.activation](conv.max(axis=1)))  # [N, num]
        h = jnp.concatenate(pooled, -1)  # [N, F], F = sum of the filter numbers
        for k in range(self.highway_layers):
            h = Highway(dtype=self.dtype, param_dtype=self.param_dtype, name=f"highway_{k}")(h)
        h = nn.Dense(
            self.output_dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=part(_normal_fan_in(h.shape[-1]), ("mlp", "embed")),
            bias_init=part(nn.initializers.zeros, ("embed",)),
            name="projection",
        )(h)
        return h.reshape(*batch_shape, self.output_dim)  # [B, L, output_dim]
