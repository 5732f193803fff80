"""Transformer blocks shared by the encoder (BERT) and decoder (GPT) models."""

import dataclasses
from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import precision
from tlx.layers.attention import MultiHeadAttention, check_impl
from tlx.layers.embed import default_init


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of a transformer stack; model configs embed one of these."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    gelu: Literal["tanh", "erf"] = "tanh"
    norm_position: Literal["post", "pre"] = "post"
    # GPT-2: the projections that write into the residual stream start at std 0.02 / sqrt(2 N).
    scale_residual_init: bool = False
    dtype: str = "float32"  # compute dtype; tlx.precision
    param_dtype: str = "float32"
    remat: str = "none"  # tlx.precision.REMATS, applied per block
    attention_impl: str = "xla"  # tlx.layers.attention.IMPLEMENTATIONS

    def __post_init__(self):
        precision.check(self.dtype, self.param_dtype, self.remat)
        check_impl(self.attention_impl)

    @property
    def head_dim(self) -> int:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        return self.hidden_size // self.num_heads


def activation(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
    if name == "tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "erf":
        return lambda x: jax.nn.gelu(x, approximate=False)
    raise ValueError(f"unknown gelu variant {name!r}; expected 'tanh' or 'erf'")


def layer_norm(eps: float, name: str, dtype=jnp.float32, param_dtype=jnp.float32) -> nn.LayerNorm:
    """Output in `dtype`; flax computes the mean / variance in float32 whatever `dtype` is."""
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class Mlp(nn.Module):
    intermediate_size: int
    gelu: str = "tanh"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = default_init
    out_init: Callable | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        d = x.shape[-1]
        h = nn.Dense(
            self.intermediate_size,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            name="wi",
        )(x)
        h = activation(self.gelu)(precision.tag(h, precision.MLP_HIDDEN))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))  # [B, L, I]
        out = nn.Dense(
            d,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(
                self.out_init or self.kernel_init, ("mlp", "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="wo",
        )(h)
        return precision.tag(out, precision.MLP_OUT)  # [B, L, D]


class TransformerBlock(nn.Module):
    """Attention + MLP with residuals; LayerNorm after (BERT, GPT-1) or before (GPT-2) each.
    `deterministic` and `decode` may be positional: nn.remat marks them static by position."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, x, bias, deterministic: bool, decode: bool = False, cache_index=0
    ) -> jnp.ndarray:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=deterministic)  # noqa: E731
        out_init = None
        if cfg.scale_residual_init:
            out_init = nn.initializers.normal(0.02 / (2 * cfg.num_layers) ** 0.5)
        attn = MultiHeadAttention(
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            dropout_rate=cfg.attention_dropout_rate,
            dtype=dtype,
            param_dtype=param_dtype,
            attention_impl=cfg.attention_impl,
            out_init=out_init,
            name="attention",
        )
        mlp = Mlp(
            cfg.intermediate_size, gelu=cfg.gelu, dtype=dtype, param_dtype=param_dtype,
            out_init=out_init, name="mlp",
        )  # fmt: skip
        ln_attn = layer_norm(cfg.layer_norm_eps, "attention_ln", dtype, param_dtype)
        ln_mlp = layer_norm(cfg.layer_norm_eps, "mlp_ln", dtype, param_dtype)

        def attend(y):
            out = attn(y, bias, deterministic=deterministic, decode=decode, cache_index=cache_index)
            return precision.tag(out, precision.ATTENTION_OUT)  # [B, L, D]

        if cfg.norm_position == "post":
            x = ln_attn(x + drop(attend(x)))
            x = ln_mlp(x + drop(mlp(x)))
        else:
            x = x + drop(attend(ln_attn(x)))
            x = x + drop(mlp(ln_mlp(x)))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class TransformerStack(nn.Module):
    """`num_layers` blocks named layer_0..layer_{N-1}; returns (last, [every block's output]).
    `config.remat` wraps each block in nn.remat (same parameter paths: the lifted block keeps
    its name and adds no scope)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, bias, *, deterministic: bool, decode: bool = False, cache_index=0):
        wrap, policy = precision.remat_policy(self.config.remat)
        block = TransformerBlock
        if wrap:  # static: deterministic (argnum 3, self is 0) and decode (4)
            block = nn.remat(TransformerBlock, static_argnums=(3, 4), policy=policy)
        states = []
        for i in range(self.config.num_layers):
            x = block(self.config, name=f"layer_{i}")(x, bias, deterministic, decode, cache_index)
            states.append(x)
        return x, states
