"""One composition for every downstream model: any encoder under `encoder/`, any head under `head/`.

An encoder is a module called as `encoder(batch, *, train)` that returns
  (sequence [B, L, D], intermediates {'hidden_states': [...], 'pooled': [B, D]?, OUTPUTS: {...}?})
(bert.TaskEncoder, gpt.TaskEncoder, word_encoders.TaskEncoder, contextual.TaskEncoder). A head
is a tlx.heads module called as `head(sequence, intermediates, batch, *, deterministic)`.
Because every task model is this one module, its parameters are always `encoder/...` and
`head/...`, and a transfer regex (`dont_load=['head/.*']`, `optim.frozen=['encoder/.*']`)
means the same thing for BERT, GPT, word-vector and contextual-feature models.

Models return (outputs, intermediates) as every tlx model does (STYLE habit 7): outputs are
{'logits'} plus whatever the encoder hands on under OUTPUTS (GPT's LM auxiliary inputs
`lm_hidden` / `lm_embedding`, ELMo's scalar-mix `penalty`), which objectives read.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import heads

OUTPUTS = "outputs"  # intermediates key: extra model outputs, moved out of the intermediates


class EncoderWithHead(nn.Module):
    """encoder -> head. `frozen_encoder` (feature-based transfer): the encoder runs
    deterministically under stop_gradient, so XLA drops its backward pass entirely (pair it
    with `optim.frozen=['encoder/.*']` so the optimizer never touches it either)."""

    encoder: nn.Module
    head: nn.Module
    frozen_encoder: bool = False

    def __call__(self, batch, *, train: bool = False):
        sequence, inter = self.encoder(batch, train=train and not self.frozen_encoder)
        if self.frozen_encoder:
            sequence, inter = jax.lax.stop_gradient((sequence, inter))
        inter = dict(inter)
        extra = inter.pop(OUTPUTS, {})
        logits = self.head(sequence, inter, batch, deterministic=not train)
        return {"logits": logits, **extra}, inter


def precision_options(config) -> dict:
    """A head's dtype / param_dtype from its encoder's config (tlx.precision names)."""
    return {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}


def transformer_task(encoder: nn.Module, kind: str, num_classes, dropout_rate: float, *,
                     features: str = "last", head_hidden: int = 0, frozen_encoder: bool = False,
                     position: str = "first", dtype=jnp.float32,
                     param_dtype=jnp.float32) -> EncoderWithHead:  # fmt: skip
    """A BERT / GPT task model: `kind` 'sentence' reads one position's `features` (a tuple
    `num_classes`: one head per mixture task), 'tagging' every token's; `head_hidden` > 0 adds
    a hidden layer; `frozen_encoder` for feature-based transfer; the head's precision."""
    kw = {"dtype": dtype, "param_dtype": param_dtype}
    if kind == "tagging":
        head = heads.TaggingHead(num_classes, features, dropout_rate, head_hidden, **kw)
    else:
        head = heads.sentence_head(num_classes, features=features, dropout_rate=dropout_rate,
                                   hidden_size=head_hidden, position=position, **kw)  # fmt: skip
    return EncoderWithHead(encoder, head, frozen_encoder)
