"""LSTMs for the recurrent paradigms (CoVe, ELMo): one cell, one scanned direction, and the two
ways of stacking directions.

  LSTMCell      params of one layer, one direction: input kernel [D, 4H], recurrent kernel
                [P, 4H], bias [4H] (forget gate starts at 1), optional projection [H, P]
                (Sak et al. 2014's LSTMP, as ELMo uses), optional cell / projection clipping.
  LSTM          one direction over [B, L, D] with `lax.scan`. The input half of the gates is one
                [B*L, D] x [D, 4H] matmul before the scan, so the loop holds only the recurrent
                matmul. `reverse=True` reads each row backwards from its own last token.
  LSTMStack     layers of one direction, optional residual connections between layers.
  BiLSTM        both directions, `num_layers` deep, stacked one of two ways:
                  joint     (CoVe, most taggers) layer k reads both directions of layer k-1;
                  separate  (ELMo's biLM) two independent directional stacks, so no state of the
                            forward stack ever saw a later token (a joint stack leaks the future
                            into layer 2, which a language model cannot have).
                Each returns every layer's states, so feature extractors need no surgery.

Masking: `mask` [B, L] marks real tokens, padding follows them. States at padded positions are
zero, the carry stops at each row's last token, and the backward direction starts at it, so no
output depends on what (or how much) padding follows a row.

Parameters carry logical axis names (`embed` for input / recurrent / projected widths, `mlp` for
the gate width), so `mesh.model` shards the gates like a transformer's MLP.

Precision (tlx.precision): matmuls, gates and outputs h in `dtype`; the cell state c is float32
whatever `dtype` is (it sums over every step, where bfloat16 would lose the small updates).
Remat: `remat` names the jax.checkpoint policy of each scan step (the gate pre-activations
z [B, 4H] are tagged `lstm_gates`).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import precision

Carry = tuple[jnp.ndarray, jnp.ndarray]  # (cell [B, H] float32, output [B, P] in dtype)
# Input and projection kernels: Glorot uniform (the transformers' N(0, 0.02) leaves an LSTM's
# gates near 0.5 and trains it slowly from scratch); recurrent kernels: orthogonal.
GLOROT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def reverse_padded(x: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
    """Reverses each row's first lengths[b] positions of x [B, L, ...]; padding stays put.
    Its own inverse."""
    t = jnp.arange(x.shape[1])[None, :]  # [1, L]
    idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # [B, L]
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def lstm_step(p: dict, carry: Carry, gx: jnp.ndarray, cell_clip=None, proj_clip=None):
    """One LSTM step from the precomputed input gates gx [B, 4H] -> (new carry, output [B, P]).
    A pure function of the cell's param arrays `p`, so decoders can call it inside their own
    scans (gate order i, f, g, o)."""
    c, h = carry
    z = gx + h @ p["recurrent_kernel"].astype(h.dtype)  # [B, 4H]
    z = precision.tag(z, precision.LSTM_GATES)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)  # c's float32 wins the promotion
    if cell_clip:
        c = jnp.clip(c, -cell_clip, cell_clip)
    h = (jax.nn.sigmoid(o) * jnp.tanh(c)).astype(z.dtype)
    if "projection" in p:
        h = h @ p["projection"].astype(h.dtype)
        if proj_clip:
            h = jnp.clip(h, -proj_clip, proj_clip)
    return (c, h), h


def _gate_bias_init(key, shape, dtype=jnp.float32):
    """Zeros, except 1 for the forget gate (Jozefowicz et al. 2015)."""
    del key
    h = shape[0] // 4
    return jnp.zeros(shape, dtype).at[h : 2 * h].set(1.0)


class LSTMCell(nn.Module):
    """Holds one layer-direction's parameters; `input_gates` and `params` feed `lstm_step`."""

    hidden: int
    proj: int | None = None  # LSTMP: outputs (and the recurrent input) projected to this width
    cell_clip: float | None = None
    proj_clip: float | None = None
    dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = GLOROT
    param_dtype: jnp.dtype = jnp.float32

    @property
    def out_features(self) -> int:
        return self.proj or self.hidden

    def setup(self):
        h4 = 4 * self.hidden
        part = nn.with_logical_partitioning
        self.recurrent_kernel = self.param(
            "recurrent_kernel",
            part(nn.initializers.orthogonal(), ("embed", "mlp")),
            (self.out_features, h4),
            self.param_dtype,
        )
        self.bias = self.param("bias", part(_gate_bias_init, ("mlp",)), (h4,), self.param_dtype)
        if self.proj:
            self.projection = self.param(
                "projection",
                part(self.kernel_init, ("mlp", "embed")),
                (self.hidden, self.proj),
                self.param_dtype,
            )
        self.input = nn.DenseGeneral(
            h4,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=part(self.kernel_init, ("embed", "mlp")),
            name="input_kernel",
        )

    def input_gates(self, x: jnp.ndarray) -> jnp.ndarray:
        """x [..., D] -> [..., 4H] (input half of the gates, bias included)."""
        return self.input(x) + self.bias.astype(self.dtype)

    def params(self) -> dict:
        p = {"recurrent_kernel": self.recurrent_kernel}
        if self.proj:
            p["projection"] = self.projection
        return p

    def initial_carry(self, batch: int) -> Carry:
        return (
            jnp.zeros((batch, self.hidden), jnp.promote_types(jnp.float32, self.dtype)),
            jnp.zeros((batch, self.out_features), self.dtype),
        )

    def step(self, carry: Carry, gx: jnp.ndarray) -> tuple[Carry, jnp.ndarray]:
        return lstm_step(self.params(), carry, gx, self.cell_clip, self.proj_clip)

    def __call__(self, carry: Carry, x: jnp.ndarray) -> tuple[Carry, jnp.ndarray]:
        """One step from input x [B, D] (decoders); sequences go through `LSTM`."""
        return self.step(carry, self.input_gates(x))


class LSTM(nn.Module):
    """One direction, one layer: x [B, L, D], mask [B, L] -> (states [B, L, P], final carry)."""

    hidden: int
    proj: int | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    reverse: bool = False
    unroll: int = 1  # lax.scan unroll: a few steps per loop iteration helps small batches on CPU
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"  # tlx.precision.REMATS, per scan step

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> tuple[jnp.ndarray, Carry]:
        cell = LSTMCell(
            self.hidden, self.proj, self.cell_clip, self.proj_clip, self.dtype,
            param_dtype=self.param_dtype, name="cell",
        )  # fmt: skip
        mask = mask.astype(bool)
        lengths = mask.sum(1).astype(jnp.int32)  # [B]
        x = x.astype(self.dtype)
        if self.reverse:
            x = reverse_padded(x, lengths)
        gates = cell.input_gates(x)  # [B, L, 4H], one matmul for all steps
        gates = nn.with_logical_constraint(gates, ("batch", "length", "mlp"))
        p, clips = cell.params(), (self.cell_clip, self.proj_clip)

        def body(carry, inputs):
            gx, m = inputs  # [B, 4H], [B]
            new, out = lstm_step(p, carry, gx, *clips)
            keep = m[:, None]
            carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
            return carry, jnp.where(keep, out, 0.0)

        time_major = (jnp.swapaxes(gates, 0, 1), jnp.swapaxes(mask, 0, 1))
        carry, outs = jax.lax.scan(
            precision.checkpoint(body, self.remat),
            cell.initial_carry(x.shape[0]),
            time_major,
            unroll=self.unroll,
        )
        outs = jnp.swapaxes(outs, 0, 1)  # [B, L, P]
        if self.reverse:
            outs = reverse_padded(outs, lengths)
        return nn.with_logical_constraint(outs, ("batch", "length", "embed")), carry


class LSTMStack(nn.Module):
    """`num_layers` LSTMs of one direction -> every layer's states [[B, L, P]] and final carries.
    `residual`: layer k > 0 adds its input to its output (ELMo's residual into layer 2)."""

    num_layers: int
    hidden: int
    proj: int | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    reverse: bool = False
    residual: bool = False
    dropout_rate: float = 0.0  # between layers
    unroll: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool = True):
        layers, finals = [], []
        for k in range(self.num_layers):
            if k:
                x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            out, carry = LSTM(
                self.hidden, self.proj, self.cell_clip, self.proj_clip, self.reverse,
                self.unroll, self.dtype, self.param_dtype, self.remat, name=f"layer_{k}",
            )(x, mask)  # fmt: skip
            if self.residual and k and out.shape == x.shape:
                out = out + x
            layers.append(out)
            finals.append(carry)
            x = out
        return layers, finals


class BiLSTM(nn.Module):
    """Forward and backward LSTMs, `num_layers` deep -> (every layer's states [[B, L, 2P]],
    [(forward final carry, backward final carry)] per layer). `separate`: ELMo's two
    independent directional stacks; else each layer reads both directions of the one below."""

    num_layers: int
    hidden: int
    proj: int | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    separate: bool = False
    residual: bool = False
    dropout_rate: float = 0.0
    unroll: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"

    def _stack(self, reverse: bool, num_layers: int, name: str):
        return LSTMStack(
            num_layers, self.hidden, self.proj, self.cell_clip, self.proj_clip, reverse,
            self.residual, self.dropout_rate, self.unroll, self.dtype, self.param_dtype,
            self.remat, name=name,
        )  # fmt: skip

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool = True):
        if self.separate:
            fw, fw_final = self._stack(False, self.num_layers, "forward")(
                x, mask, deterministic=deterministic
            )
            bw, bw_final = self._stack(True, self.num_layers, "backward")(
                x, mask, deterministic=deterministic
            )
            layers = [jnp.concatenate(pair, -1) for pair in zip(fw, bw)]
            return layers, list(zip(fw_final, bw_final))
        layers, finals = [], []
        for k in range(self.num_layers):
            if k:
                x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            (fw,), (fw_final,) = self._stack(False, 1, f"forward_{k}")(x, mask)
            (bw,), (bw_final,) = self._stack(True, 1, f"backward_{k}")(x, mask)
            out = jnp.concatenate([fw, bw], -1)  # [B, L, 2P]
            if self.residual and k and out.shape == x.shape:
                out = out + x
            layers.append(out)
            finals.append((fw_final, bw_final))
            x = out
        return layers, finals
