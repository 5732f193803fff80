"""Feature-based transfer of contextual word vectors: a task model over frozen GloVe, CoVe or ELMo.

The pretrained network only supplies features; a small task model learns on top (McCann et al.
2017, Peters et al. 2018). `features` picks what the task model reads at each word:
  scratch      a trained-from-random embedding (the no-transfer row)
  glove        GloVe                                     (table encoder/embed/embedding)
  glove+cove   [GloVe; CoVe], CoVe = the last layer of the MT-LSTM's encoder over GloVe
               (encoder/cove/embed/embedding is the GloVe table, encoder/cove/bilstm the
               MT-LSTM's encoder: a cove_mt run's cove/..., see tlx.models.migrate)
  elmo         [GloVe; ELMo], ELMo = gamma * sum_k softmax(s)_k h_k over the biLM's layers
               (mix='all': layer 0 = the char-CNN vector duplicated to the biLSTM width, and
               the two biLSTM layers) or its top layer alone (mix='last')
The pretrained parts are frozen twice over: `jax.lax.stop_gradient` on their outputs (so no
backward pass runs through them) and `optim.frozen` in the config (so the optimizer never
touches them). Only the scalar mix, the task encoder and the head train.

The task model is tlx.models.word_encoders' BiLSTM (sentence: max-pool; tagging: per token)
and the shared sentence / tagging heads (tlx.models.compose), the same for every row, so rows
differ only in their input features. Batches are a downstream task's over a word vocabulary
(`words:glove6b` for the GloVe-based rows), plus `char_ids` [B, L, 50] for ELMo
(`data.options.char_ids=True`).

Precision: the model section's `dtype` / `param_dtype` (tlx.precision) apply to the whole model,
the pretrained CoVe / ELMo parts included (their own sections' values are overridden).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import heads
from tlx.layers.embed import Embed
from tlx.layers.scalar_mix import ScalarMix
from tlx.models import compose, word_encoders
from tlx.models import cove as cove_lib
from tlx.models import elmo as elmo_lib

FEATURES = ("scratch", "glove", "glove+cove", "elmo")
MIXES = ("last", "all")


@dataclasses.dataclass(frozen=True)
class ContextualConfig:
    features: str
    encoder: word_encoders.WordEncoderConfig  # the task model (vocab_size, embed_dim = GloVe's)
    cove: cove_lib.CoveConfig | None = None
    elmo: elmo_lib.ElmoConfig | None = None
    mix: str = "all"
    mix_l2: float = 0.0  # ELMo's lambda ||s||^2 on the mixing scalars
    feature_dropout: float = 0.0  # on the concatenated features (ELMo: 0.5 on its vectors)

    def __post_init__(self):
        if self.features not in FEATURES:
            raise ValueError(f"model.features={self.features!r}; expected one of {FEATURES}")
        if self.mix not in MIXES:
            raise ValueError(f"model.mix={self.mix!r}; expected one of {MIXES}")
        if self.features == "glove+cove" and self.cove is None:
            raise ValueError("model.features='glove+cove' needs model.cove (the MT-LSTM's shape)")
        if self.features == "elmo" and self.elmo is None:
            raise ValueError("model.features='elmo' needs model.elmo (the biLM's shape)")


def contextual_features(cfg: ContextualConfig, batch, train: bool):
    """batch -> (features [B, L, F] with padding zeroed, mask [B, L], hidden states, penalty).
    Called from TaskEncoder's compact __call__, so the pretrained parts sit at the top of its
    tree (encoder/cove/..., encoder/bilm/...), as the pretraining runs' cove/... and bilm/..."""
    enc = cfg.encoder
    mask = batch["input_mask"].astype(bool)  # [B, L]
    penalty = jnp.zeros((), jnp.float32)
    if cfg.features == "glove+cove":
        glove, layers = cove_lib.CoveEncoder(cfg.cove, name="cove")(
            batch["input_ids"], mask, deterministic=True
        )  # [B, L, E], [[B, L, 2H]]
        hidden = [glove, *layers]
        feats = jax.lax.stop_gradient(jnp.concatenate([glove, layers[-1]], -1))  # [B, L, E+2H]
    else:
        init = word_encoders.scratch_init
        table = Embed(
            enc.vocab_size, enc.embed_dim, embedding_init=init, name="embed",
            dtype=jnp.dtype(enc.dtype), param_dtype=jnp.dtype(enc.param_dtype),
        )  # fmt: skip
        words = table(batch["input_ids"])  # [B, L, E]
        if cfg.features != "scratch":
            words = jax.lax.stop_gradient(words)
        hidden, feats = [words], words
        if cfg.features == "elmo":
            out = elmo_lib.BiLM(cfg.elmo, name="bilm")(batch["char_ids"], mask)
            layers = [jax.lax.stop_gradient(h) for h in out["layers"]]  # [[B, L, 2P]]
            if cfg.mix == "all":
                mix = ScalarMix(
                    len(layers), cfg.mix_l2, param_dtype=jnp.dtype(enc.param_dtype),
                    name="scalar_mix",
                )  # fmt: skip
                mixed, penalty = mix(layers, mask)
            else:
                mixed = layers[-1]
            hidden = [words, *layers]
            feats = jnp.concatenate([words, mixed], -1)  # [B, L, E + 2P]
    feats = nn.Dropout(cfg.feature_dropout)(feats, deterministic=not train)
    return feats * mask[..., None], mask, hidden, penalty


class TaskEncoder(nn.Module):
    """(batch, *, train) -> (task BiLSTM states [B, L, 2H], {'hidden_states': [inputs...,
    states], 'pooled' (sentence), OUTPUTS: {'penalty'}}), the encoder interface of
    tlx.models.compose. Its parameters: the pretrained parts (`cove/`, `bilm/`, `embed/`),
    `scalar_mix/` and the task encoder's layers (`bilstm/`), side by side."""

    config: ContextualConfig
    per_token: bool = False

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        feats, mask, hidden, penalty = contextual_features(self.config, batch, train)
        states, pooled = word_encoders.encode(
            self.config.encoder, feats, mask, per_token=self.per_token, deterministic=not train
        )
        inter = {"hidden_states": hidden if states is None else [*hidden, states]}
        if pooled is not None:
            inter["pooled"] = pooled
        inter[compose.OUTPUTS] = {"penalty": penalty}
        return (feats if states is None else states), inter


def classifier(config: ContextualConfig, num_classes: int) -> compose.EncoderWithHead:
    """Sentence / pair classification: features -> BiLSTM max-pool -> classifier [B, C]."""
    head = heads.SentenceHead(
        num_classes, "pooled", config.encoder.dropout_rate,
        **compose.precision_options(config.encoder),
    )  # fmt: skip
    return compose.EncoderWithHead(TaskEncoder(config), head)


def tagger(config: ContextualConfig, num_classes: int) -> compose.EncoderWithHead:
    """Token tagging: features -> BiLSTM states -> tag logits [B, L, C]."""
    head = heads.TaggingHead(
        num_classes, "last", config.encoder.dropout_rate,
        **compose.precision_options(config.encoder),
    )  # fmt: skip
    return compose.EncoderWithHead(TaskEncoder(config, per_token=True), head)


def _dataclass_from(cls, section, policy: dict) -> object:
    """A pretrained part's config from its section, under the model's precision `policy`."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: section[k] for k in fields if k in section}
    kw.update(policy)
    return cls(**{k: tuple(map(tuple, v)) if k == "filters" else v for k, v in kw.items()})


def model_config(cfg) -> ContextualConfig:
    """The ContextualConfig of a config's model section: the task encoder's fields at its top
    level, the pretrained network's shape in model.cove / model.elmo."""
    if cfg.get("vocab_size") is None:
        raise ValueError("model.vocab_size is None: tlx.train fills it from data.vocab")
    encoder = word_encoders.encoder_config(cfg)
    policy = {"dtype": encoder.dtype, "param_dtype": encoder.param_dtype}
    return ContextualConfig(
        features=cfg.features,
        encoder=encoder,
        cove=_dataclass_from(cove_lib.CoveConfig, cfg.cove, policy) if cfg.get("cove") else None,
        elmo=_dataclass_from(elmo_lib.ElmoConfig, cfg.elmo, policy) if cfg.get("elmo") else None,
        mix=cfg.get("mix", "all"),
        mix_l2=cfg.get("mix_l2", 0.0),
        feature_dropout=cfg.get("feature_dropout", 0.0),
    )
