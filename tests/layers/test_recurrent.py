"""tlx.layers.recurrent: parity with torch.nn.LSTM (projection, reverse, padding), stacking."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from tlx.layers.recurrent import LSTM, BiLSTM, reverse_padded

B, L, D, H, P = 3, 7, 5, 6, 4
LENGTHS = np.array([7, 4, 1])


@pytest.fixture(scope="module")
def data():
    x = np.random.RandomState(0).randn(B, L, D).astype(np.float32)
    return x, np.arange(L)[None] < LENGTHS[:, None]


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


@pytest.mark.parametrize("proj,reverse", [(None, False), (P, True)])
def test_matches_torch_per_row(data, proj, reverse):
    """Each row equals torch run on that row alone (reversed for the backward direction), and
    padded positions are zero: the carry stops, and the backward pass starts, at the row's end."""
    x, mask = data
    m = LSTM(H, proj, reverse=reverse)
    params = m.init(jax.random.PRNGKey(0), x, mask)
    out, (c, h) = m.apply(params, x, mask)
    t = _torch_lstm(nn.unbox(params["params"])["cell"], proj)
    for b, n in enumerate(LENGTHS):
        row = x[b : b + 1, :n][:, ::-1] if reverse else x[b : b + 1, :n]
        with torch.no_grad():
            y, (th, tc) = t(torch.tensor(row.copy()))
        y = y.numpy()[0][::-1] if reverse else y.numpy()[0]
        np.testing.assert_allclose(np.asarray(out[b, :n]), y, atol=1e-5)
        np.testing.assert_allclose(np.asarray(h[b]), th.numpy()[0, 0], atol=1e-5)
        np.testing.assert_allclose(np.asarray(c[b]), tc.numpy()[0, 0], atol=1e-5)
        assert not np.asarray(out[b, n:]).any()


def test_clipping_bounds_cell_and_projection(data):
    x, mask = data
    m = LSTM(H, P, cell_clip=0.05, proj_clip=0.001)
    params = m.init(jax.random.PRNGKey(1), 30 * x, mask)
    out, (c, _) = m.apply(params, 30 * x, mask)
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
        params = m.init(jax.random.PRNGKey(2), x, mask)
        a, _ = m.apply(params, x, mask)
        b, _ = m.apply(params, later, mask)
        forward_top = lambda layers: np.asarray(layers[1][0, :5, :P])  # noqa: E731
        assert a[1].shape == (B, L, 2 * P)
        changed = not np.allclose(forward_top(a), forward_top(b))
        assert changed == leaks, f"separate={separate}"
        assert np.allclose(np.asarray(a[0][0, :5, :P]), np.asarray(b[0][0, :5, :P]))
