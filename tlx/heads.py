"""Small modules that sit on an encoder's [B, L, D] states: MLM, NSP, classification, tagging.

The downstream heads are generic over any encoder that returns (sequence [B, L, D],
{'hidden_states': [embeddings, layer_0, ...], ...}): BERT today, GPT / ELMo / CoVe / embedding
models later. `features` picks what the head reads, so the BERT paper's finetune and
feature-based settings differ only in config:
  'pooled'      the encoder's own sentence vector (BERT: tanh pooler over [CLS]);
  'first'       the final state at position 0 ([CLS]);
  'last4_concat' / 'last4_sum'   the last four layers' states, concatenated / summed
                (the BERT paper's best feature-based choice for NER);
  'last'        the final states (token tagging).
Sentence heads read position `extract_position` (0 = [CLS]) of per-token features.
"""

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


FEATURES = ("pooled", "first", "last", "last4_concat", "last4_sum")


def select_features(sequence: jnp.ndarray, inter: dict, features: str) -> jnp.ndarray:
    """Per-token features [B, L, D'] (or the pooled [B, D] for 'pooled') from encoder outputs."""
    if features == "pooled":
        if "pooled" not in inter:
            raise ValueError("features='pooled' needs an encoder with a pooler (e.g. BERT)")
        return inter["pooled"]
    if features in ("first", "last"):
        return sequence
    if features in ("last4_concat", "last4_sum"):
        layers = inter["hidden_states"][-4:]
        if len(layers) < 4:
            raise ValueError(f"features={features!r} needs >= 4 layers, encoder has {len(layers)}")
        return jnp.concatenate(layers, -1) if features == "last4_concat" else sum(layers)
    raise ValueError(f"unknown features {features!r}; expected one of {FEATURES}")


class SentenceHead(nn.Module):
    """Sentence (or sentence-pair) classification from one position's features (or pooled):
    dropout -> [dense -> GELU -> dropout]* -> dense. `extract` [B] overrides the position per
    example (GPT reads the final token; default 0 = [CLS])."""

    num_classes: int
    features: str = "pooled"
    dropout_rate: float = 0.1
    hidden_size: int = 0  # > 0: one hidden layer (useful on frozen features)

    @nn.compact
    def __call__(self, sequence, inter, *, deterministic: bool, extract=None):
        x = select_features(sequence, inter, self.features)
        if x.ndim == 3:  # per-token features: take the extract position
            pos = jnp.zeros(x.shape[:1], jnp.int32) if extract is None else extract
            x = gather_positions(x, pos[:, None])[:, 0]  # [B, D']
        return _mlp(x, self.num_classes, self.hidden_size, self.dropout_rate, deterministic)


class TaggingHead(nn.Module):
    """Token tagging: every position's features -> dropout -> [hidden] -> dense -> [B, L, C]."""

    num_classes: int
    features: str = "last"
    dropout_rate: float = 0.1
    hidden_size: int = 0

    @nn.compact
    def __call__(self, sequence, inter, *, deterministic: bool):
        x = select_features(sequence, inter, self.features)
        if x.ndim != 3:
            raise ValueError(f"tagging needs per-token features, not {self.features!r}")
        return _mlp(x, self.num_classes, self.hidden_size, self.dropout_rate, deterministic)


def _mlp(x, num_classes, hidden_size, dropout_rate, deterministic):
    x = nn.Dropout(dropout_rate)(x, deterministic=deterministic)
    if hidden_size:
        x = activation("erf")(dense(hidden_size, ("embed", "mlp"), "hidden")(x))
        x = nn.Dropout(dropout_rate)(x, deterministic=deterministic)
    return dense(num_classes, ("mlp" if hidden_size else "embed", "classes"), "dense")(x).astype(
        jnp.float32
    )
