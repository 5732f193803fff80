"""BERT (Devlin et al., 2019): encoder, pretraining model (MLM + NSP), classifier and tagger.

Matches the reference google-research/bert layout: post-LN blocks, LayerNorm eps 1e-12,
GELU, truncated-normal(0.02) init, token+position+segment embeddings -> LN -> dropout,
tanh pooler over [CLS], MLM decoder tied to the token embedding.

Precision and remat follow the config's `dtype`, `param_dtype` and `remat` (tlx.precision):
matmuls and activations in `dtype`, LayerNorm statistics, attention softmax and the MLM / NSP
logits in float32.
"""

import flax.linen as nn
import jax.numpy as jnp

from tlx import heads
from tlx.layers.attention import padding_mask
from tlx.layers.embed import Embed
from tlx.layers.transformer import TransformerConfig, TransformerStack, layer_norm
from tlx.models import compose

BertConfig = TransformerConfig

SIZES = {
    # name: (layers, hidden, heads, intermediate); tiny..small follow Turc et al. (2019).
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}


SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")


def config_for_size(size: str, **overrides) -> BertConfig:
    """A named size, with any field overridden; size='custom' takes the shape from overrides
    (as converted checkpoints do, e.g. MiniLM's L6 H384 A12 I1536)."""
    if size == "custom":
        missing = [k for k in SHAPE_KEYS if overrides.get(k) is None]
        if missing:
            raise ValueError(f"size='custom' needs model.{', model.'.join(missing)}")
        kw = {"vocab_size": 30522}
    elif size in SIZES:
        kw = dict(zip(SHAPE_KEYS, SIZES[size], strict=True), vocab_size=30522)
    else:
        raise ValueError(f"unknown BERT size {size!r}; expected 'custom' or one of {sorted(SIZES)}")
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return BertConfig(**kw)


class BertEncoder(nn.Module):
    """(sequence_output [B, L, D], {'hidden_states': [emb, layer_0, ...], 'pooled': [B, D]})."""

    config: BertConfig

    def setup(self):
        cfg = self.config
        kw = {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}
        self.token_embed = Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embed = Embed(
            cfg.max_position, cfg.hidden_size, axes=("position", "embed"), **kw
        )
        self.segment_embed = Embed(
            cfg.type_vocab_size, cfg.hidden_size, axes=("segment", "embed"), **kw
        )
        self.embed_ln = layer_norm(cfg.layer_norm_eps, "embed_ln", **kw)
        self.embed_dropout = nn.Dropout(cfg.dropout_rate)
        self.layers = TransformerStack(cfg)
        self.pooler = heads.dense(cfg.hidden_size, ("embed", "mlp"), "pooler", **kw)

    def __call__(self, input_ids, segment_ids, input_mask, *, deterministic: bool):
        length = input_ids.shape[1]
        if length > self.config.max_position:
            raise ValueError(
                f"sequence length {length} exceeds max_position={self.config.max_position}"
            )
        x = (
            self.token_embed(input_ids)
            + self.position_embed(jnp.arange(length)[None, :])
            + self.segment_embed(segment_ids)
        )  # [B, L, D]
        x = self.embed_dropout(self.embed_ln(x), deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        out, states = self.layers(x, padding_mask(input_mask), deterministic=deterministic)
        pooled = jnp.tanh(self.pooler(out[:, 0]))  # [B, D] from [CLS]
        return out, {"hidden_states": [x, *states], "pooled": pooled}

    def decode(self, h: jnp.ndarray) -> jnp.ndarray:
        """Tied output projection through the token embedding: [..., D] -> [..., V]."""
        return self.token_embed.attend(h)


def _encode(encoder: BertEncoder, batch, train: bool):
    return encoder(
        batch["input_ids"],
        batch["segment_ids"],
        batch["input_mask"],
        deterministic=not train,
    )


class BertForPreTraining(nn.Module):
    """MLM + NSP. The MLM head scores only `masked_lm_positions` unless `mlm_all_positions`."""

    config: BertConfig
    mlm_all_positions: bool = False

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        cfg = self.config
        encoder = BertEncoder(cfg, name="encoder")
        seq, inter = _encode(encoder, batch, train)
        states = (
            seq
            if self.mlm_all_positions
            else heads.gather_positions(seq, batch["masked_lm_positions"])
        )  # [B, P, D]
        mlm_logits = heads.MlmHead(
            cfg.vocab_size, cfg.gelu, cfg.layer_norm_eps, jnp.dtype(cfg.dtype),
            jnp.dtype(cfg.param_dtype), name="mlm_head",
        )(states, encoder.decode)  # fmt: skip
        nsp = heads.ClassifierHead(2, param_dtype=jnp.dtype(cfg.param_dtype), name="nsp_head")
        nsp_logits = nsp(inter["pooled"], deterministic=True)
        return {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}, inter


class TaskEncoder(BertEncoder):
    """BertEncoder over a batch: (batch, *, train) -> (sequence [B, L, D], {'hidden_states',
    'pooled'}), the encoder interface of tlx.models.compose. Same parameters as BertEncoder,
    so a bert_pretrain run's `encoder/...` loads as is."""

    def __call__(self, batch, *, train: bool = False):
        return super().__call__(
            batch["input_ids"], batch["segment_ids"], batch["input_mask"], deterministic=not train
        )


def classifier(config: BertConfig, num_classes, **options) -> compose.EncoderWithHead:
    """[CLS] sentence [SEP] (or a segment-id'd pair) -> features (pooled [CLS] by default) ->
    classifier; `num_classes` a tuple: one head per task of a mixture (heads.MultiTaskHead).
    Options: features, head_hidden, frozen_encoder (compose.transformer_task)."""
    options = {"features": "pooled", **options}
    return compose.transformer_task(
        TaskEncoder(config), "sentence", num_classes, config.dropout_rate,
        **compose.precision_options(config), **options,
    )  # fmt: skip


def tagger(config: BertConfig, num_classes: int, **options) -> compose.EncoderWithHead:
    """[CLS] words [SEP] -> every token's features -> tag classifier ([B, L, C] logits)."""
    return compose.transformer_task(
        TaskEncoder(config), "tagging", num_classes, config.dropout_rate,
        **compose.precision_options(config), **options,
    )  # fmt: skip


CONFIG_KEYS = (
    "vocab_size",
    "max_position",
    "dropout_rate",
    "attention_dropout_rate",
    "gelu",
    "dtype",
    "param_dtype",
    "remat",
    "attention_impl",
    "type_vocab_size",
    "layer_norm_eps",
    *SHAPE_KEYS,
)


def model_config(cfg) -> BertConfig:
    """The BertConfig a config's model section names: model.size plus any CONFIG_KEYS set."""
    return config_for_size(cfg.size, **{k: cfg[k] for k in CONFIG_KEYS if k in cfg})
