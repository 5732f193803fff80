"""tlx.layers.recurrent: parity with torch.nn.LSTM (projection, reverse, padding), stacking."""

import copy
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tlx.layers.recurrent import LSTM, BiLSTM, reverse_padded

B, L, D, H, P = 3, 7, 5, 6, 4
LENGTHS = np.array([7, 4, 1])


parity = sys.modules["tlx_tests_parity"]  # tests/parity.py, loaded by conftest.py


@pytest.fixture(scope="module")
def data():
    x = np.random.RandomState(0).randn(B, L, D).astype(np.float32)
    return x, np.arange(L)[None] < LENGTHS[:, None]


def _random_params(module, x, mask, seed, std=0.3):
    """Normal(0, std) values, biases included, on the init's tree (shapes from eval_shape, which
    is free; dispatching or compiling the init itself costs seconds on 2 cores)."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), x, mask))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (std * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def _torch_lstm(cell: dict, proj: int | None) -> torch.nn.LSTM:
    """A torch LSTM holding the same weights (same i, f, g, o gate order)."""
    t = torch.nn.LSTM(D, H, proj_size=proj or 0, batch_first=True)
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.tensor(np.asarray(cell["input_kernel"]["kernel"]).T))
        t.weight_hh_l0.copy_(torch.tensor(np.asarray(cell["recurrent_kernel"]).T))
        t.bias_ih_l0.copy_(torch.tensor(np.asarray(cell["bias"])))
        t.bias_hh_l0.zero_()
        if proj:
            t.weight_hr_l0.copy_(torch.tensor(np.asarray(cell["projection"]).T))
    return t


def _torch_rows(t: torch.nn.LSTM, x, reverse, dtype) -> list[tuple[np.ndarray, ...]]:
    """(outputs [n, P], final h, final c) of torch run on each row alone, in `dtype`."""
    rows = []
    for b, n in enumerate(LENGTHS):
        row = x[b : b + 1, :n][:, ::-1] if reverse else x[b : b + 1, :n]
        with torch.no_grad():
            y, (th, tc) = t(torch.tensor(row.copy(), dtype=dtype))
        y = y.numpy()[0][::-1] if reverse else y.numpy()[0]
        rows.append((y, th.numpy()[0, 0], tc.numpy()[0, 0]))
    return rows


@pytest.mark.parametrize("proj,reverse", [(None, False), (P, True)])
def test_matches_torch_per_row(data, proj, reverse):
    """Each row equals torch run on that row alone (reversed for the backward direction), and
    padded positions are zero: the carry stops, and the backward pass starts, at the row's end.
    tlx float32 is held to torch float64 by tests/parity.py's bound; tlx float64 (x64 enabled
    for this block only) to torch float64 within float64 rounding."""
    x, mask = data
    m = LSTM(H, proj, reverse=reverse)
    params = _random_params(m, x, mask, seed=0)
    out, (c, h) = jax.jit(m.apply)(params, x, mask)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        m64 = LSTM(H, proj, reverse=reverse, dtype=jnp.float64)
        result = jax.jit(m64.apply)(p64, x.astype(np.float64), mask)
        out64, (c64, h64) = jax.tree.map(np.asarray, result)
    assert out64.dtype == np.float64
    t = _torch_lstm(params["params"]["cell"], proj)
    torch32 = _torch_rows(t, x, reverse, torch.float32)
    torch64 = _torch_rows(copy.deepcopy(t).double(), x, reverse, torch.float64)
    check = parity.Checker()
    for b, n in enumerate(LENGTHS):
        for k, name in enumerate(("out", "h", "c")):
            ours = (out[b, :n], h[b], c[b])[k]
            check(f"{name}_{b}", ours, torch64[b][k], torch32[b][k])
            check.float64(f"x64_{name}_{b}", (out64[b, :n], h64[b], c64[b])[k], torch64[b][k])
        assert not np.asarray(out[b, n:]).any() and not out64[b, n:].any()
    check.assert_ok()


def test_clipping_bounds_cell_and_projection(data):
    x, mask = data
    m = LSTM(H, P, cell_clip=0.05, proj_clip=0.001)
    params = _random_params(m, 30 * x, mask, seed=1)
    out, (c, _) = jax.jit(m.apply)(params, 30 * x, mask)
    assert np.abs(np.asarray(c)).max() <= 0.05 + 1e-7
    assert np.abs(np.asarray(out)).max() <= 0.001 + 1e-8
    assert np.abs(np.asarray(out)).max() > 0.0009  # the clip binds


def test_reverse_padded_is_an_involution():
    x = np.arange(B * L).reshape(B, L)
    r = np.asarray(reverse_padded(x, LENGTHS))
    np.testing.assert_array_equal(r[1], [x[1, 3], x[1, 2], x[1, 1], x[1, 0], *x[1, 4:]])
    np.testing.assert_array_equal(np.asarray(reverse_padded(r, LENGTHS)), x)


def test_stacking_joint_vs_separate(data):
    """Joint: layer 2 of the forward direction reads layer 1's backward states (so it sees the
    future); separate (ELMo): it never does. Residual adds the layer's input."""
    x, mask = data
    later = x.copy()
    later[0, 5:] += 1.0  # change tokens 5, 6 of row 0
    for separate, leaks in ((False, True), (True, False)):
        m = BiLSTM(2, H, P, separate=separate, residual=True)
        params = _random_params(m, x, mask, seed=2)
        apply = jax.jit(m.apply)  # op-by-op dispatch of the scans is slow on 2 cores
        a, _ = apply(params, x, mask)
        b, _ = apply(params, later, mask)
        forward_top = lambda layers: np.asarray(layers[1][0, :5, :P])  # noqa: E731
        assert a[1].shape == (B, L, 2 * P)
        changed = not np.allclose(forward_top(a), forward_top(b))
        assert changed == leaks, f"separate={separate}"
        assert np.allclose(np.asarray(a[0][0, :5, :P]), np.asarray(b[0][0, :5, :P]))
