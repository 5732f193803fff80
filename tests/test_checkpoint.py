"""Pretrained-checkpoint loading: exact by name, loud on any mismatch."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tlx import checkpoint, partitioning

_State = sys.modules["tlx_tests_conftest"].FakeTrainState  # tests/conftest.py


def _save(workdir, params, step=7):
    mngr = checkpoint.manager(str(workdir / "checkpoints"), every=1)
    checkpoint.save(mngr, step, _State(params), {"step": step}, force=True)
    mngr.wait_until_finished()
    mngr.close()


def _shardings(params):
    mesh = partitioning.make_mesh({"data": -1}, jax.devices()[:1])
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), params)


def _pretrained():
    return {
        "encoder": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)},
        "mlm_head": {"bias": jnp.full((5,), 2.0)},
    }


def _model():
    return {
        "encoder": {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)},
        "classifier": {"kernel": jnp.full((3, 2), 9.0)},
    }


def test_loads_by_name_keeps_new_head(tmp_path):
    _save(tmp_path, _pretrained())
    model = _model()
    loaded, step = checkpoint.load_pretrained(
        str(tmp_path), model, _shardings(model), dont_load=["classifier/.*"], ignore=["mlm_head/.*"]
    )
    assert step == 7
    np.testing.assert_array_equal(loaded["encoder"]["w"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(loaded["encoder"]["b"], 1.0)
    np.testing.assert_array_equal(loaded["classifier"]["kernel"], 9.0)


def test_unused_checkpoint_param_is_named(tmp_path):
    _save(tmp_path, _pretrained())
    model = _model()
    with pytest.raises(checkpoint.TransferError, match="checkpoint parameter mlm_head/bias"):
        checkpoint.load_pretrained(
            str(tmp_path), model, _shardings(model), dont_load=["classifier/.*"]
        )


def test_missing_param_is_named(tmp_path):
    _save(tmp_path, _pretrained())
    model = _model()
    with pytest.raises(checkpoint.TransferError, match="classifier/kernel.*missing"):
        checkpoint.load_pretrained(str(tmp_path), model, _shardings(model), ignore=["mlm_head/.*"])


def test_wrong_shape_is_named(tmp_path):
    _save(tmp_path, _pretrained())
    model = _model()
    model["encoder"]["w"] = jnp.zeros((3, 3))
    with pytest.raises(checkpoint.TransferError, match=r"encoder/w: checkpoint shape \(2, 3\)"):
        checkpoint.load_pretrained(
            str(tmp_path),
            model,
            _shardings(model),
            dont_load=["classifier/.*"],
            ignore=["mlm_head/.*"],
        )


def test_no_checkpoint_is_an_error(tmp_path):
    model = _model()
    with pytest.raises(checkpoint.TransferError, match="no Orbax checkpoint"):
        checkpoint.load_pretrained(str(tmp_path), model, _shardings(model))


def test_loading_params_only_prints_no_orbax_warnings(tmp_path, caplog, capfd):
    """init_from reads the params of a step that also holds opt_state and meta: Orbax must not
    warn about the items deliberately left unread (it did, once per item, before)."""
    import logging

    _save(tmp_path, _pretrained())
    model = _model()
    with caplog.at_level(logging.INFO):
        checkpoint.load_pretrained(
            str(tmp_path), model, _shardings(model), dont_load=["classifier/.*"],
            ignore=["mlm_head/.*"],
        )  # fmt: skip
        step, _ = checkpoint.restore_params(
            str(tmp_path / "checkpoints"), _pretrained(), _shardings(_pretrained())
        )
    assert step == 7
    said = caplog.text + "".join(capfd.readouterr())
    assert "could not be restored" not in said and "found in the checkpoint" not in said
