"""Downstream models over a word-embedding table: the three ways to transfer an embedding layer.

The table `encoder/embed/embedding` [V, D] is all a word2vec or GloVe run can hand on; the
config says how it transfers (configs/embeddings/classify.py), Kim (2014)'s three CNN variants:
  scratch   random init, trained with the rest          (CNN-rand)
  frozen    pretrained vectors, never updated (CNN-static; optim.frozen=['encoder/embed/.*'])
  finetune  pretrained vectors, trained with the rest   (CNN-non-static)
The vectors are placed by `tlx.train` (transfer.init_vectors), never here.

Encoders, all over the ids of `[CLS] words [SEP]` (pairs: the whole `[CLS] a [SEP] b [SEP]` row):
  bag     masked mean of the word vectors -> dropout -> dense + tanh/relu (a one-layer deep
          averaging network, Iyyer et al. 2015)
  cnn     Kim (2014): widths 3, 4, 5 x 100 filters, ReLU; a sentence max-pools over time, a
          tagger keeps every position ('SAME' windows)
  bilstm  a bidirectional LSTM that stops at each row's length; a sentence max-pools its states
          over time (pool='max') or concatenates the two final states (pool='final')
Precision (tlx.precision): `dtype` for the table's output, the encoder and the head's hidden
layer, `param_dtype` for every parameter; the logits are float32 (tlx.heads).
Padding never reaches the logits: padded positions' vectors are zeroed before the encoder,
windows and states at padded positions are left out of pooling, and the LSTM runs only over
each row's length, so logits do not depend on what (or how much) padding follows a row.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import heads, precision
from tlx.layers.embed import Embed
from tlx.models import compose

ENCODERS = ("bag", "cnn", "bilstm")
TAGGER_ENCODERS = ("cnn", "bilstm")  # a bag has no per-token states
POOLS = ("max", "final")
ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu}


def scratch_init(key, shape, dtype=jnp.float32):
    """U[-0.25, 0.25]: Kim (2014)'s init for words without a pretrained vector (CNN-rand), on the
    scale of pretrained vectors' values (BERT's 0.02 would start the words nearly equal)."""
    return jax.random.uniform(key, shape, dtype, -0.25, 0.25)


@dataclasses.dataclass(frozen=True)
class WordEncoderConfig:
    vocab_size: int
    embed_dim: int = 50
    encoder: str = "cnn"
    hidden_size: int = 100  # bag: hidden layer width; bilstm: units per direction
    widths: tuple[int, ...] = (3, 4, 5)
    filters: int = 100  # per width
    activation: str = "relu"  # bag's hidden layer
    pool: str = "max"  # bilstm sentence vector
    dropout_rate: float = 0.5  # before the classifier (and, for bag, before its hidden layer)
    embed_dropout: float = 0.0  # on the word vectors
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        precision.check(self.dtype, self.param_dtype)
        choices = {"encoder": ENCODERS, "pool": POOLS, "activation": tuple(ACTIVATIONS)}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"model.{field}={getattr(self, field)!r}; expected one of {allowed}"
                )
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"model.widths={self.widths!r}; expected positive window widths")


def masked_max(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Max over time of x [B, L, F] where mask [B, L]; 0 for a row with no position (the
    all-padding rows that fill an eval batch), never -inf."""
    mask = mask[..., None]
    pooled = jnp.max(jnp.where(mask, x, jnp.finfo(x.dtype).min), axis=1)  # [B, F]
    return jnp.where(mask.any(1), pooled, 0.0)


def embed_words(cfg: WordEncoderConfig, batch, train: bool):
    """(word vectors [B, L, D] with padding zeroed, the encoder's input after dropout, mask).
    Called from a compact __call__, so the table is that module's `embed/embedding`."""
    table = Embed(
        cfg.vocab_size, cfg.embed_dim, embedding_init=scratch_init, name="embed", **_kw(cfg)
    )
    mask = batch["input_mask"].astype(bool)  # [B, L]
    words = table(batch["input_ids"]) * mask[..., None]  # [B, L, D]
    return words, nn.Dropout(cfg.embed_dropout)(words, deterministic=not train), mask


def encode(cfg: WordEncoderConfig, x, mask, *, per_token: bool, deterministic: bool):
    """Word vectors x [B, L, D], mask [B, L] -> (per-token states [B, L, F] or None, sentence
    vector [B, F'] or None). `per_token`: a tagger's states, no sentence pooling. Called from a
    compact __call__, whose module holds the layers (conv{k}, bilstm or hidden)."""
    if cfg.encoder == "cnn":
        return _cnn(cfg, x, mask, per_token)
    if cfg.encoder == "bilstm":
        return _bilstm(cfg, x, mask, per_token)
    if per_token:
        raise ValueError(
            f"model.encoder={cfg.encoder!r} has no per-token states; a tagger needs one "
            f"of {TAGGER_ENCODERS}"
        )
    count = jnp.maximum(mask.sum(1, keepdims=True), 1)  # [B, 1]
    mean = x.sum(1) / count  # [B, D]
    h = nn.Dropout(cfg.dropout_rate)(mean, deterministic=deterministic)
    h = heads.dense(cfg.hidden_size, ("embed", "mlp"), "hidden", **_kw(cfg))(h)
    return None, ACTIVATIONS[cfg.activation](h)  # [B, H]


def _kw(cfg: WordEncoderConfig) -> dict:
    return {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}


def _cnn(cfg: WordEncoderConfig, x, mask, per_token: bool):
    outs = []
    for k in cfg.widths:
        pad = "SAME" if per_token else "VALID"
        conv = nn.Conv(cfg.filters, (k,), padding=pad, name=f"conv{k}", **_kw(cfg))
        if per_token:
            outs.append(nn.relu(conv(x)))  # [B, L, F]; padding is zeros, as at the edge
        else:
            # Right-pad k - 1 zeros: window t covers words t..t+k-1, there is one window per
            # real word whatever the padded length, and a row shorter than k still has one.
            padded = jnp.pad(x, ((0, 0), (0, k - 1), (0, 0)))
            outs.append(masked_max(nn.relu(conv(padded)), mask))  # [B, F]
    if per_token:
        return jnp.concatenate(outs, -1) * mask[..., None], None  # [B, L, F * widths]
    return None, jnp.concatenate(outs, -1)  # [B, F * widths]


def _bilstm(cfg: WordEncoderConfig, x, mask, per_token: bool):
    lengths = mask.sum(1).astype(jnp.int32)  # [B]; padding follows the words
    # parent=None: each cell and RNN belongs to the module it is handed to, so the params
    # read bilstm/forward_rnn/cell/... instead of flat OptimizedLSTMCell_N.
    # The carry is created in param_dtype, so c stays float32 under a bfloat16 `dtype`.
    cell = lambda: nn.OptimizedLSTMCell(cfg.hidden_size, parent=None, **_kw(cfg))  # noqa: E731
    lstm = lambda: nn.RNN(cell(), parent=None)  # noqa: E731
    rnn = nn.Bidirectional(lstm(), lstm(), return_carry=True, name="bilstm")
    (fw, bw), states = rnn(x, seq_lengths=lengths)  # states [B, L, 2H]
    states = states * mask[..., None]
    if per_token:
        return states, None
    if cfg.pool == "final":  # LSTM carries are (c, h); each direction stops at the row's end
        return states, jnp.concatenate([fw[1], bw[1]], -1)  # [B, 2H]
    return states, masked_max(states, mask)  # [B, 2H]


class TaskEncoder(nn.Module):
    """(batch, *, train) -> (per-token states [B, L, F] (a bag or a sentence CNN: the word
    vectors), {'hidden_states': [words, (states)], 'pooled': sentence vector [B, F']}), the
    encoder interface of tlx.models.compose. Parameters: `embed/embedding` and the encoder's
    layers side by side. `per_token`: a tagger's encoder (no sentence vector, 'SAME' windows)."""

    config: WordEncoderConfig
    per_token: bool = False

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        words, x, mask = embed_words(self.config, batch, train)
        states, pooled = encode(
            self.config, x, mask, per_token=self.per_token, deterministic=not train
        )
        inter = {"hidden_states": [words] if states is None else [words, states]}
        if pooled is not None:
            inter["pooled"] = pooled
        return (words if states is None else states), inter


def classifier(config: WordEncoderConfig, num_classes: int) -> compose.EncoderWithHead:
    """Sentence or pair classification from the encoder's sentence vector -> logits [B, C]."""
    head = heads.SentenceHead(num_classes, "pooled", config.dropout_rate, **_kw(config))
    return compose.EncoderWithHead(TaskEncoder(config), head)


def tagger(config: WordEncoderConfig, num_classes: int) -> compose.EncoderWithHead:
    """Token tagging from a cnn / bilstm encoder's per-token states -> logits [B, L, C]."""
    head = heads.TaggingHead(num_classes, "last", config.dropout_rate, **_kw(config))
    return compose.EncoderWithHead(TaskEncoder(config, per_token=True), head)


def encoder_config(cfg) -> WordEncoderConfig:
    """The WordEncoderConfig fields found in a config's model section."""
    fields = {f.name for f in dataclasses.fields(WordEncoderConfig)}
    kw = {k: cfg[k] for k in fields if k in cfg}
    if "widths" in kw:
        kw["widths"] = tuple(kw["widths"])
    return WordEncoderConfig(**kw)


def model_config(cfg) -> WordEncoderConfig:
    """The WordEncoderConfig of a config's model section (vocab_size set by then)."""
    if cfg.get("vocab_size") is None:
        raise ValueError(
            "model.vocab_size is None (= the data vocabulary's size, filled in by tlx.train); "
            "set it to build the model elsewhere"
        )
    return encoder_config(cfg)
