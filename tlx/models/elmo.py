"""ELMo (Peters et al., 2018): a character-based bidirectional LM whose layers are the features.

  BiLM     chars [B, L, 50] -> CharCNN token vectors x [B, L, P] -> two *separate* directional
           LSTMP stacks (H cells projected to P, cell / projection clipping, a residual
           connection into layer 2). Separate stacks matter: the forward stack never sees a
           later token, the backward one never an earlier token, so each can predict the
           neighbour on its side. Returns every layer at width 2P: layer 0 is x duplicated
           [x; x] (so the scalar mix weights all layers at one width), then [fw_k; bw_k].
  ElmoLM   BiLM + one softmax (output embedding [V, P], bias [V]) shared by both directions,
           as in the paper ("tie the parameters for ... the Softmax layer").
  bilm     the objective: forward xent of token t + 1 from fw_t plus backward xent of token
           t - 1 from bw_t, each within the token's document (packed rows: `document_ids`).

Packed rows: the LSTMs run over the whole row, so a state may have read the neighbouring
documents on its own side (as bilm-tf carries state across sentences), but no target is ever
on that side: each direction still predicts only a token it has not seen, within its document.

Sizes: 'full' is the released 2x4096_512_2048cnn_2xhighway model (93.6M parameters without the
softmax); 'small' (LSTM 512, projection 128) trains on a CPU; 'tiny' is for tests.

Softmax: 'full' scores all V words (fused with the cross-entropy, objectives.tied_xent, so
[B, L, V] logits never exist). 'sampled' (Jean et al. 2015), for the paper's 793k-word
vocabulary: in training ElmoLM draws K ids once per batch from the log-uniform (Zipfian)
distribution over the frequency-sorted word ids, from the `dropout` rng stream the training
loop already passes (so the draw is fresh every step and reproducible), and returns them as
`sampled_ids`; `bilm` then scores the target against them. Evaluation (train=False) draws
nothing, so it always uses the full softmax.

The sampled loss is log(e^{o_t} + sum_{s != t} e^{o_s} / (K Q(s))) - o_t: each sample's logit is
corrected by log(K Q(s)) (its expected count), accidental hits (s == t) are dropped, and the
true class is *not* corrected. Then the sum inside the log is an unbiased estimate of the
partition function, and the loss (its log) tends to the full softmax loss as K grows (Bengio &
Senecal 2008), with a gradient close to the full one. TF's sampled_softmax_loss (used by
bilm-tf) also subtracts log E[count] from the true logit; that suits its draws without
replacement, where E[count] <= 1. Drawing with replacement, as here, K Q(t) is ~90 for the
commonest word at K = 8192 over 793k ids, and correcting the target by it would make the loss
ignore how likely the model already finds such words.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import precision
from tlx.layers.char_cnn import ELMO_FILTERS, CharCNN
from tlx.layers.recurrent import BiLSTM

SOFTMAXES = ("full", "sampled")


@dataclasses.dataclass(frozen=True)
class ElmoConfig:
    vocab_size: int  # softmax vocabulary: the word ids the LM predicts
    char_dim: int = 16
    filters: tuple[tuple[int, int], ...] = ELMO_FILTERS  # (width, number), sum 2048
    highway_layers: int = 2
    projection_dim: int = 512  # P: char CNN output and LSTM projection
    lstm_dim: int = 4096  # H: LSTM cells per layer and direction
    num_layers: int = 2
    cell_clip: float = 3.0
    proj_clip: float = 3.0
    dropout_rate: float = 0.1
    softmax: str = "full"
    num_samples: int = 8192
    unroll: int = 1
    dtype: str = "float32"  # tlx.precision: compute dtype, master weights, remat per LSTM step
    param_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        precision.check(self.dtype, self.param_dtype, self.remat)
        positive = ("vocab_size", "char_dim", "projection_dim", "lstm_dim", "num_layers")
        for name in (*positive, "num_samples", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)!r} must be >= 1")
        if self.highway_layers < 0:
            raise ValueError(f"model.highway_layers={self.highway_layers} must be >= 0")
        if not self.filters or any(w < 1 or n < 1 for w, n in self.filters):
            raise ValueError(
                f"model.filters={self.filters!r}: need (width >= 1, number >= 1) pairs"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"model.dropout_rate={self.dropout_rate} must be in [0, 1)")
        if self.softmax not in SOFTMAXES:
            raise ValueError(f"model.softmax={self.softmax!r}; expected one of {SOFTMAXES}")


SIZES = {
    # name: (char_dim, filters, highway_layers, projection_dim, lstm_dim)
    "tiny": (4, ((1, 4), (2, 4), (3, 8)), 2, 16, 32),
    "small": (16, ((1, 16), (2, 16), (3, 32), (4, 64), (5, 128)), 2, 128, 512),
    "full": (16, ELMO_FILTERS, 2, 512, 4096),  # the paper's
}
SHAPE_KEYS = ("char_dim", "filters", "highway_layers", "projection_dim", "lstm_dim")


def config_for_size(size: str, **overrides) -> ElmoConfig:
    """A named size; overrides (vocab_size at least) replace any field; None means unset."""
    if size not in SIZES:
        raise ValueError(f"unknown ELMo size {size!r}; expected one of {sorted(SIZES)}")
    kw = dict(zip(SHAPE_KEYS, SIZES[size], strict=True))
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if "vocab_size" not in kw:
        raise ValueError("ELMo needs model.vocab_size (the word vocabulary the LM predicts)")
    kw["filters"] = tuple(tuple(f) for f in kw["filters"])
    return ElmoConfig(**kw)


class BiLM(nn.Module):
    """char_ids [B, L, C], mask [B, L] -> {'layers': [[x; x], layer_1, ..., layer_N] each
    [B, L, 2P], 'forward' / 'backward': top states [B, L, P]} (zero at padding)."""

    config: ElmoConfig

    @nn.compact
    def __call__(self, char_ids, mask, *, deterministic: bool = True):
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        x = CharCNN(
            char_dim=cfg.char_dim,
            filters=cfg.filters,
            highway_layers=cfg.highway_layers,
            output_dim=cfg.projection_dim,
            dtype=dtype,
            param_dtype=param_dtype,
            name="char_cnn",
        )(char_ids)  # [B, L, P]
        x = x * mask[..., None].astype(x.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        # bilm-tf drops out every LSTM layer's input; BiLSTM covers the layers above the first.
        inputs = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        layers, _ = BiLSTM(
            cfg.num_layers,
            cfg.lstm_dim,
            proj=cfg.projection_dim,
            cell_clip=cfg.cell_clip,
            proj_clip=cfg.proj_clip,
            separate=True,
            residual=True,
            dropout_rate=cfg.dropout_rate,
            unroll=cfg.unroll,
            dtype=dtype,
            param_dtype=param_dtype,
            remat=cfg.remat,
            name="bilstm",
        )(inputs, mask, deterministic=deterministic)
        top, p = layers[-1], cfg.projection_dim
        return {
            "layers": [jnp.concatenate([x, x], -1), *layers],
            "forward": top[..., :p],
            "backward": top[..., p:],
        }


def _mask(batch) -> jnp.ndarray:
    """[B, L] real tokens: input_mask, else document_ids > 0, else everything."""
    if "input_mask" in batch:
        return batch["input_mask"]
    if "document_ids" in batch:
        return batch["document_ids"] > 0
    return jnp.ones(batch["char_ids"].shape[:2], jnp.int32)


class ElmoLM(nn.Module):
    """batch {char_ids [B, L, 50], input_mask [B, L], (document_ids [B, L])} ->
    ({'forward_hidden', 'backward_hidden' [B, L, P], 'softmax_embedding' [V, P],
      'softmax_bias' [V], in sampled training also 'sampled_ids' [K]},
     {'hidden_states': [layer_0, ..., layer_N] each [B, L, 2P]})."""

    config: ElmoConfig

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        cfg = self.config
        out = BiLM(cfg, name="bilm")(batch["char_ids"], _mask(batch), deterministic=not train)
        softmax = _Softmax(
            cfg.vocab_size, cfg.projection_dim, jnp.dtype(cfg.param_dtype), name="softmax"
        )
        embedding, bias = softmax()  # float32 logits: tlx.objectives.bilm
        drop = nn.Dropout(cfg.dropout_rate)  # on the softmax input, as bilm-tf
        outputs = {
            "forward_hidden": drop(out["forward"], deterministic=not train),
            "backward_hidden": drop(out["backward"], deterministic=not train),
            "softmax_embedding": embedding,
            "softmax_bias": bias,
        }
        if train and cfg.softmax == "sampled":
            rng = self.make_rng("dropout")
            outputs["sampled_ids"] = sample_log_uniform(rng, cfg.vocab_size, cfg.num_samples)
        return outputs, {"hidden_states": out["layers"]}


class _Softmax(nn.Module):
    """The shared output layer: embedding [V, P] (normal(1 / sqrt(P)), as bilm-tf), bias [V]."""

    vocab_size: int
    features: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self):
        part = nn.with_logical_partitioning
        embedding = self.param(
            "embedding",
            part(nn.initializers.normal(self.features**-0.5), ("vocab", "embed")),
            (self.vocab_size, self.features),
            self.param_dtype,
        )
        bias = self.param(
            "bias", part(nn.initializers.zeros, ("vocab",)), (self.vocab_size,), self.param_dtype
        )
        return embedding, bias


# ---------------------------------------------------------------------------- sampled softmax


def sample_log_uniform(rng, vocab_size: int, num_samples: int) -> jnp.ndarray:
    """[K] int32 ids drawn with replacement from Q, by inverting its CDF log(k + 1) / log(V + 1)."""
    u = jax.random.uniform(rng, (num_samples,))
    ids = jnp.floor(jnp.exp(u * math.log(vocab_size + 1.0))) - 1.0
    return jnp.clip(ids, 0, vocab_size - 1).astype(jnp.int32)
