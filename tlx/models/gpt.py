"""GPT (Radford et al., 2018) and GPT-2 (2019): decoder-only transformer, causal LM, finetuning.

Two variants of one decoder, picked by `variant`:
  gpt1  post-LN blocks (LayerNorm after each residual add), no final LayerNorm;
  gpt2  pre-LN blocks, a final LayerNorm (`final_ln`), residual projections initialised at
        0.02 / sqrt(2 N) (N layers).
Both: learned position embeddings, LayerNorm eps 1e-5, tanh-approximated GELU, output logits
through the tied token embedding (no output bias), truncated-normal(0.02) init.

Packed rows: `document_ids` [B, L] (0 = padding) keep attention inside each document and
`positions` [B, L] restart at 0 at each document start. Without them a row is one document
(`input_mask` marks its tokens). `decode=True` runs on a key/value cache (see tlx/generate.py).

Finetuning (GPT-1 section 3.3): the task input is framed `<s> text <e>` or `<s> a $ b <e>` by
the data pipeline (framing="gpt"); the classifier reads the final state at the extract token
`<e>`, the last token of each row, and the LM auxiliary loss (objective `lm_coef`) reads the
same decoder's states through the tied embedding.

Precision and remat follow the config's `dtype`, `param_dtype` and `remat` (tlx.precision);
the tied logits are float32 (products in `dtype`, summed in float32). Remat changes only the
backward pass: decoding on the cache runs the same blocks.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from tlx.layers.attention import causal_mask, document_mask
from tlx.layers.embed import Embed
from tlx.layers.transformer import TransformerConfig, TransformerStack, layer_norm
from tlx.models import compose

SIZES = {
    # name: (layers, hidden, heads, intermediate)
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (12, 768, 12, 3072),  # GPT-1 and GPT-2 small (117M / 124M)
}
SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
VARIANTS = ("gpt1", "gpt2")


@dataclasses.dataclass(frozen=True)
class GptConfig(TransformerConfig):
    variant: str = "gpt2"

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown GPT variant {self.variant!r}; expected one of {VARIANTS}")


def config_for_size(size: str, variant: str = "gpt2", **overrides) -> GptConfig:
    """A named size (or 'custom' with the shape in overrides) of either variant."""
    if size == "custom":
        missing = [k for k in SHAPE_KEYS if overrides.get(k) is None]
        if missing:
            raise ValueError(f"size='custom' needs model.{', model.'.join(missing)}")
        kw = {}
    elif size in SIZES:
        kw = dict(zip(SHAPE_KEYS, SIZES[size], strict=True))
    else:
        raise ValueError(f"unknown GPT size {size!r}; expected 'custom' or one of {sorted(SIZES)}")
    kw.update(
        vocab_size=50257,
        max_position=1024 if variant == "gpt2" else 512,
        layer_norm_eps=1e-5,
        gelu="tanh",
    )
    kw.update({k: v for k, v in overrides.items() if v is not None})
    pre = variant == "gpt2"
    return GptConfig(
        **kw,
        variant=variant,
        norm_position="pre" if pre else "post",
        scale_residual_init=pre,
    )


class GptDecoder(nn.Module):
    """(final states [B, L, D], {'hidden_states': [embeddings, layer_0, ..., layer_N-1]}).

    For gpt2 the last entry of hidden_states is after the final LayerNorm (as HF reports it)."""

    config: GptConfig

    def setup(self):
        cfg = self.config
        kw = {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}
        self.token_embed = Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embed = Embed(
            cfg.max_position, cfg.hidden_size, axes=("position", "embed"), **kw
        )
        self.embed_dropout = nn.Dropout(cfg.dropout_rate)
        self.layers = TransformerStack(cfg)
        if cfg.variant == "gpt2":
            self.final_ln = layer_norm(cfg.layer_norm_eps, "final_ln", **kw)
        self.decode_position = _DecodePosition()

    def __call__(self, input_ids, *, document_ids=None, positions=None, deterministic: bool,
                 decode: bool = False):  # fmt: skip
        length = input_ids.shape[1]
        start = 0
        if decode:  # one position counter for the whole stack; layers write their cache there
            start = self.decode_position(length)
            positions = jnp.broadcast_to(start + jnp.arange(length)[None], input_ids.shape)
            bias = None
        else:
            if length > self.config.max_position:
                raise ValueError(
                    f"sequence length {length} exceeds max_position={self.config.max_position}"
                )
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(length)[None], input_ids.shape)
            # One document a row: causal only (cuDNN then reads no mask at all).
            bias = causal_mask() if document_ids is None else document_mask(document_ids)
        x = self.token_embed(input_ids) + self.position_embed(positions)  # [B, L, D]
        x = self.embed_dropout(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        out, states = self.layers(
            x, bias, deterministic=deterministic, decode=decode, cache_index=start
        )
        if self.config.variant == "gpt2":
            out = self.final_ln(out)
            states = [*states[:-1], out]
        return out, {"hidden_states": [x, *states]}

    def decode_logits(self, h: jnp.ndarray) -> jnp.ndarray:
        """Tied output projection through the token embedding: [..., D] -> [..., V] float32."""
        return self.token_embed.attend(h).astype(jnp.float32)

    def output_embedding(self) -> jnp.ndarray:
        return self.token_embed.embedding  # [V, D]


class _DecodePosition(nn.Module):
    """Positions already decoded, counted in the `cache` collection: returns the first position
    of the `length` tokens fed now and advances the count (the init call only creates it)."""

    @nn.compact
    def __call__(self, length: int):
        ready = self.has_variable("cache", "position")
        pos = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
        start = pos.value if ready else 0
        if ready:
            pos.value = start + length
        return start


def _decoder_inputs(batch) -> dict:
    """Packing features if present, else one document per row marked by input_mask."""
    kw = {k: batch[k] for k in ("document_ids", "positions") if k in batch}
    if "document_ids" not in kw and "input_mask" in batch:
        kw["document_ids"] = batch["input_mask"]
    return kw


class GptForCausalLM(nn.Module):
    """Returns {'lm_hidden' [B, L, D], 'lm_embedding' [V, D]} so the loss can fuse the tied
    [V, D] projection with the cross-entropy (objectives.causal_lm) instead of materialising
    [B, L, V] logits; `logits` (decode / generation) computes them."""

    config: GptConfig

    def setup(self):
        self.decoder = GptDecoder(self.config)

    def __call__(self, batch, *, train: bool = False):
        h, inter = self.decoder(
            batch["input_ids"], **_decoder_inputs(batch), deterministic=not train
        )
        return {"lm_hidden": h, "lm_embedding": self.decoder.output_embedding()}, inter

    def logits(self, input_ids, *, decode: bool = False, **kw):
        """[B, L] ids -> [B, L, V] next-token logits (float32)."""
        h, _ = self.decoder(input_ids, deterministic=True, decode=decode, **kw)
        return self.decoder.decode_logits(h)


class TaskEncoder(GptDecoder):
    """GptDecoder over a batch: (batch, *, train) -> (final states [B, L, D], {'hidden_states',
    OUTPUTS: {'lm_hidden', 'lm_embedding'}}), the encoder interface of tlx.models.compose. The
    LM auxiliary inputs reach the model's outputs (objective `lm_coef`); same parameters as
    GptDecoder, a gpt_lm run's `decoder/...` (tlx.models.migrate maps them to `encoder/...`)."""

    def __call__(self, batch, *, train: bool = False):
        h, inter = super().__call__(
            batch["input_ids"], **_decoder_inputs(batch), deterministic=not train
        )
        lm = {"lm_hidden": h, "lm_embedding": self.output_embedding()}
        return h, {**inter, compose.OUTPUTS: lm}


def classifier(config: GptConfig, num_classes: int, **options) -> compose.EncoderWithHead:
    """`<s> text <e>` / `<s> a $ b <e>` -> features at the extract token `<e>` (each row's last
    real token) -> classifier. Options: features, head_hidden, frozen_encoder."""
    return compose.transformer_task(
        TaskEncoder(config), "sentence", num_classes, config.dropout_rate, position="last",
        **compose.precision_options(config), **options,
    )  # fmt: skip


def tagger(config: GptConfig, num_classes: int, **options) -> compose.EncoderWithHead:
    """`<s> words <e>` -> each token's (left-context) state -> tag classifier [B, L, C]."""
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
    "layer_norm_eps",
    *SHAPE_KEYS,
)


def model_config(cfg) -> GptConfig:
    """The GptConfig a config's model section names: model.size, model.variant, CONFIG_KEYS."""
    if cfg.get("vocab_size", 0) is None:
        raise ValueError(
            "model.vocab_size is None (= the data vocabulary's size, filled in by "
            "tlx.train); set it to build the model elsewhere"
        )
    overrides = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    return config_for_size(cfg.size, cfg.get("variant", "gpt2"), **overrides)
