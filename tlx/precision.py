"""How a model computes, chosen in its config section: the precision policy and the remat policy.

Precision (`model.dtype`, `model.param_dtype`):
  dtype        compute dtype of matmuls and activations: "float32" | "bfloat16"
  param_dtype  dtype the parameters (master weights) are created and kept in: "float32"
               (default) | "bfloat16"
Whatever `dtype` is, these stay float32 (the float32 islands): LayerNorm statistics (flax
promotes its mean / variance to float32), attention logits and softmax (tlx.layers.attention),
output logits (vocabulary projections accumulate in float32; classifier heads run in float32),
cross-entropy (tlx.objectives), LSTM cell states c, ScalarMix statistics. "float32" runs exactly
the plain path: every cast it adds is to the dtype a tensor already has.

Remat (`model.remat`): which activations a transformer block (per block, `nn.remat`) or an LSTM
step (per step, `jax.checkpoint` on the scan body) keeps for the backward pass; the rest is
recomputed. Names, from most kept to least:
  none                         no rematerialisation (the plain path)
  dots                         jax.checkpoint_policies.dots_saveable: every matmul's output
  <jax.checkpoint_policies>    any policy there, e.g. dots_with_no_batch_dims_saveable (the
                               weight matmuls, not attention's scores / context)
  save_proj                    the tagged outputs of the block's weight matmuls: attention
                               output, MLP hidden [B, L, I] and output, LSTM gates [B, 4H]
  save_out                     only the [B, L, D] sublayer outputs (attention, MLP) and the
                               LSTM gates: the MLP hidden, the largest, is recomputed
  full                         nothing (jax.checkpoint's default): the whole block is recomputed
The tags are `jax.ad_checkpoint.checkpoint_name`s set in tlx.layers.transformer (TAGS) and
tlx.layers.recurrent.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from tlx.errors import ConfigError

DTYPES = ("float32", "bfloat16")

# checkpoint_name tags (transformer block: [B, L, D] / [B, L, I]; LSTM step: [B, 4H]).
ATTENTION_OUT, MLP_HIDDEN, MLP_OUT, LSTM_GATES = (
    "attention_out",
    "mlp_hidden",
    "mlp_out",
    "lstm_gates",
)
PRESETS = {
    "save_proj": (ATTENTION_OUT, MLP_HIDDEN, MLP_OUT, LSTM_GATES),
    "save_out": (ATTENTION_OUT, MLP_OUT, LSTM_GATES),
}
# jax.checkpoint_policies entries that are policies themselves (the rest build one from names).
_JAX_POLICIES = tuple(
    name
    for name in (
        "everything_saveable",
        "dots_saveable",
        "checkpoint_dots",
        "dots_with_no_batch_dims_saveable",
        "checkpoint_dots_with_no_batch_dims",
        "nothing_saveable",
    )
    if hasattr(jax.checkpoint_policies, name)
)
REMATS = ("none", "full", "dots", *PRESETS, *_JAX_POLICIES)


@dataclasses.dataclass(frozen=True)
class Policy:
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        check(self.dtype, self.param_dtype, self.remat)


def check(dtype: str, param_dtype: str = "float32", remat: str = "none") -> None:
    """ConfigError naming the key of a value that is not a policy."""
    for key, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        _check_dtype(value, key)
    if remat not in REMATS:
        raise ConfigError(f"model.remat={remat!r}; expected one of {REMATS}")


def _check_dtype(value, key: str) -> None:
    if value not in DTYPES:
        raise ConfigError(f"model.{key}={value!r}; expected one of {DTYPES}")


def parse(model_cfg) -> Policy:
    """The policy of a config's model section (absent keys: float32 / float32 / none)."""
    return Policy(
        model_cfg.get("dtype", "float32"),
        model_cfg.get("param_dtype", "float32"),
        model_cfg.get("remat", "none"),
    )


def describe(model_cfg) -> dict:
    """{dtype, param_dtype, remat} of a model section, as recorded in checkpoint metadata."""
    return dataclasses.asdict(parse(model_cfg))


def dtype(name: str, key: str = "dtype") -> jnp.dtype:
    """A policy dtype name as a jnp dtype (ConfigError naming model.KEY otherwise)."""
    _check_dtype(name, key)
    return jnp.dtype(name)


def remat_policy(name: str):
    """(wrap?, policy): whether `name` rematerialises, and the jax.checkpoint policy (None:
    save nothing)."""
    if name not in REMATS:
        raise ConfigError(f"model.remat={name!r}; expected one of {REMATS}")
    if name == "none":
        return False, None
    if name == "full":
        return True, None
    if name == "dots":
        return True, jax.checkpoint_policies.dots_saveable
    if name in PRESETS:
        return True, jax.checkpoint_policies.save_only_these_names(*PRESETS[name])
    return True, getattr(jax.checkpoint_policies, name)


def checkpoint(fn, remat: str):
    """`fn` under jax.checkpoint with the named policy; `fn` itself for 'none'. For scan bodies
    (prevent_cse=False: scan already keeps XLA from merging the recomputation away)."""
    wrap, policy = remat_policy(remat)
    return jax.checkpoint(fn, policy=policy, prevent_cse=False) if wrap else fn


def tag(x, name: str):
    """x marked for the remat presets; the identity outside jax.checkpoint."""
    return checkpoint_name(x, name)
