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
Sentence heads read one position of per-token features: `position='first'` (0 = [CLS]) or
`'last'`, each row's last real token (GPT's extract token `<e>`).

Every downstream head is called as `head(sequence, intermediates, batch, *, deterministic)`
(tlx.models.compose.EncoderWithHead), so any head sits on any encoder.

Precision (tlx.precision): a head's hidden layers run in its `dtype`; its logits layer always
runs in float32 (a float32 island: [.., D] x [D, C] with C classes is cheap), and every
parameter is created in `param_dtype`.
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from tlx.layers.attention import MASK_VALUE
from tlx.layers.embed import default_init
from tlx.layers.transformer import activation, layer_norm


def gather_positions(states: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """[B, L, D] states, [B, P] int positions -> [B, P, D]."""
    return jnp.take_along_axis(states, positions[..., None].astype(jnp.int32), axis=1)


def dense(
    features: int,
    axes: tuple[str, str],
    name: str,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    dot_general=None,
) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        dot_general=dot_general,
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
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, states: jnp.ndarray, decode: Callable[[jnp.ndarray], jnp.ndarray]):
        d = states.shape[-1]
        h = dense(d, ("embed", "mlp"), "transform", self.dtype, self.param_dtype)(states)
        h = activation(self.gelu)(h)
        h = layer_norm(self.layer_norm_eps, "transform_ln", self.dtype, self.param_dtype)(h)
        bias = self.param(
            "output_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (self.vocab_size,),
            self.param_dtype,
        )
        return (decode(h) + bias).astype(jnp.float32)  # [..., V]


class ClassifierHead(nn.Module):
    """dropout -> dense over a [B, D] feature (BERT's pooled [CLS]); also the NSP head."""

    num_classes: int
    dropout_rate: float = 0.0
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
        x = nn.Dropout(self.dropout_rate)(features, deterministic=deterministic)
        logits = dense(
            self.num_classes, ("embed", "classes"), "dense", param_dtype=self.param_dtype
        )
        return logits(x).astype(jnp.float32)


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


POSITIONS = ("first", "last")


def extract_positions(batch, position: str) -> jnp.ndarray:
    """[B] int32: 0 ('first'), or each row's last real token by input_mask ('last'; without a
    mask, the row's last position)."""
    ids = batch["input_ids"]
    if position == "first":
        return jnp.zeros(ids.shape[:1], jnp.int32)
    if position != "last":
        raise ValueError(f"unknown head position {position!r}; expected one of {POSITIONS}")
    mask = batch.get("input_mask")
    if mask is None:
        return jnp.full(ids.shape[:1], ids.shape[1] - 1, jnp.int32)
    return jnp.maximum(mask.sum(-1).astype(jnp.int32) - 1, 0)


class SentenceHead(nn.Module):
    """Sentence (or sentence-pair) classification from one position's features (or pooled):
    dropout -> [dense -> GELU -> dropout]* -> dense -> [B, C]."""

    num_classes: int
    features: str = "pooled"
    dropout_rate: float = 0.1
    hidden_size: int = 0  # > 0: one hidden layer (useful on frozen features)
    position: str = "first"  # of per-token features: 'first' ([CLS]) | 'last' (GPT's <e>)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, sequence, inter, batch, *, deterministic: bool):
        x = select_features(sequence, inter, self.features)
        if x.ndim == 3:  # per-token features [B, L, D']: take one position per row
            pos = extract_positions(batch, self.position)
            x = gather_positions(x, pos[:, None])[:, 0]  # [B, D']
        return _mlp(self, x, deterministic)


class MultiTaskHead(nn.Module):
    """One SentenceHead per task of a mixture (`task_0`, `task_1`, ...): the batch's `task_id`
    [B] picks each example's, and logits of classes beyond its task's count are masked ->
    [B, max(num_classes)]."""

    num_classes: tuple[int, ...]
    features: str = "pooled"
    dropout_rate: float = 0.1
    hidden_size: int = 0
    position: str = "first"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, sequence, inter, batch, *, deterministic: bool):
        widest = max(self.num_classes)
        per_task = []
        for i, n in enumerate(self.num_classes):
            head = SentenceHead(
                n,
                self.features,
                self.dropout_rate,
                self.hidden_size,
                self.position,
                self.dtype,
                self.param_dtype,
                name=f"task_{i}",
            )
            logits = head(sequence, inter, batch, deterministic=deterministic)  # [B, n]
            per_task.append(jnp.pad(logits, ((0, 0), (0, widest - n)), constant_values=MASK_VALUE))
        stacked = jnp.stack(per_task, 1)  # [B, T, C]
        task = batch["task_id"].reshape(-1)
        return jnp.take_along_axis(stacked, task[:, None, None], 1)[:, 0]


def sentence_head(num_classes: int | tuple[int, ...], **kw) -> nn.Module:
    """A SentenceHead, or a MultiTaskHead when `num_classes` lists one count per task."""
    if isinstance(num_classes, int):
        return SentenceHead(num_classes, **kw)
    return MultiTaskHead(tuple(num_classes), **kw)


class TaggingHead(nn.Module):
    """Token tagging: every position's features -> dropout -> [hidden] -> dense -> [B, L, C]."""

    num_classes: int
    features: str = "last"
    dropout_rate: float = 0.1
    hidden_size: int = 0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, sequence, inter, batch, *, deterministic: bool):
        del batch  # every position is tagged
        x = select_features(sequence, inter, self.features)
        if x.ndim != 3:
            raise ValueError(f"tagging needs per-token features, not {self.features!r}")
        return _mlp(self, x, deterministic)


def _mlp(head, x, deterministic):
    """dropout -> [hidden (head.dtype) -> GELU -> dropout] -> float32 logits; called from the
    head's compact __call__, which holds the layers."""
    x = nn.Dropout(head.dropout_rate)(x, deterministic=deterministic)
    axes = ("embed", "classes")
    if head.hidden_size:
        hidden = dense(head.hidden_size, ("embed", "mlp"), "hidden", head.dtype, head.param_dtype)
        x = activation("erf")(hidden(x))
        x = nn.Dropout(head.dropout_rate)(x, deterministic=deterministic)
        axes = ("mlp", "classes")
    logits = dense(head.num_classes, axes, "dense", jnp.float32, head.param_dtype)
    return logits(x).astype(jnp.float32)
