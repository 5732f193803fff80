"""Checkpoints: pretrained loading (exact by name, loud on any mismatch), checkpoint directories
as epath paths and URLs, and a run killed mid-save resuming from the step before."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tlx import checkpoint, evaluate, partitioning

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


# --- checkpoint directories as epath paths and URLs ---------------------------------------------


def _fake_bucket(root, monkeypatch):
    """etils.epath's `gs://bucket/...` mapped onto the local directory `root` (no network):
    every path operation tlx.checkpoint makes on a URL goes through epath, none through os."""
    from etils.epath import gpath, testing

    # With TensorFlow installed epath sends gs:// to tf.io.gfile, past the backends that
    # mock_epath replaces (etils 1.15); without it, gs:// takes the mockable backend.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)

    def local(p):
        return str(p).replace("gs://bucket", str(root)) if isinstance(p, str) else p

    def fn(original, path, *args, **kwargs):
        return original(local(path), *map(local, args), **kwargs)

    names = ("exists", "isdir", "listdir", "makedirs", "mkdir", "open", "rename", "stat")
    return testing.mock_epath(**dict.fromkeys(names, fn))


def test_has_steps_and_set_aside_on_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not checkpoint.has_steps("run/checkpoints")  # no directory yet
    mngr = checkpoint.manager("run/checkpoints", every=1, async_save=False)  # relative
    assert str(mngr.directory) == str(tmp_path / "run" / "checkpoints")  # made absolute
    assert not checkpoint.has_steps("run/checkpoints")  # created, but empty
    checkpoint.save(mngr, 2, _State(_pretrained()), {"step": 2}, force=True)
    mngr.close()
    assert checkpoint.has_steps("run/checkpoints")
    assert checkpoint.has_steps(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "checkpoints" / "3.orbax-checkpoint-tmp-99").mkdir()
    dest = checkpoint.set_aside("run/checkpoints/2", "run", "bit flipped")
    assert dest.startswith(str(tmp_path / "run" / checkpoint.DAMAGED_DIR / "2-"))
    assert (pathlib.Path(dest) / "params").is_dir()  # moved whole
    assert pathlib.Path(dest + ".reason.txt").read_text() == "bit flipped\n"
    assert not checkpoint.has_steps("run/checkpoints")  # a tmp dir is no step


def test_checkpoint_helpers_take_urls(tmp_path, capfd, monkeypatch):
    """has_steps, set_aside and set_aside_incomplete on a gs:// URL (epath mocked onto a local
    directory): the paths they report and move to are URLs, the files land where they should."""
    (tmp_path / "ckpt" / "4").mkdir(parents=True)
    (tmp_path / "ckpt" / "5.orbax-checkpoint-tmp-1234").mkdir()
    with _fake_bucket(tmp_path, monkeypatch):
        assert checkpoint.path("gs://bucket/ckpt") == epath.Path("gs://bucket/ckpt")
        assert checkpoint.has_steps("gs://bucket/ckpt")
        assert not checkpoint.has_steps("gs://bucket/nothing")
        mngr = types.SimpleNamespace(directory=epath.Path("gs://bucket/ckpt"))
        checkpoint.set_aside_incomplete(mngr, "gs://bucket")
        dest = checkpoint.set_aside("gs://bucket/ckpt/4", "gs://bucket", "damaged")
        assert dest.startswith(f"gs://bucket/{checkpoint.DAMAGED_DIR}/4-")
    err = capfd.readouterr().err
    assert "gs://bucket/ckpt/5.orbax-checkpoint-tmp-1234 is an interrupted save" in err
    assert f"set aside to gs://bucket/{checkpoint.DAMAGED_DIR}/5.orbax-checkpoint-tmp-1234-" in err
    assert list((tmp_path / "ckpt").iterdir()) == []
    aside = sorted(p.name.split("-")[0] for p in (tmp_path / checkpoint.DAMAGED_DIR).iterdir())
    assert aside == ["4", "4", "5.orbax", "5.orbax"]  # each dir with its .reason.txt
    assert (tmp_path / checkpoint.DAMAGED_DIR / (dest.rsplit("/", 1)[1] + ".reason.txt")).is_file()


# --- a SIGKILL while an async save is in flight -------------------------------------------------

REPO = pathlib.Path(__file__).resolve().parents[1]


def _train_cli(log: pathlib.Path, *flags) -> subprocess.Popen:
    """`python -m tlx.train` on tiny BERT (1 CPU device), its output in `log` (not a pipe: a
    stopped reader must not block it)."""
    cmd = [sys.executable, "-m", "tlx.train",
           "--config=configs/bert/pretrain.py:size=tiny,runlocal", *flags]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _kill_mid_save(proc: subprocess.Popen, ckpt: pathlib.Path) -> tuple[int, str]:
    """SIGKILLs `proc` while its async save of step N+1 is in flight, step N committed:
    (N, the N+1 temporary directory's name). Each time a temporary directory shows, the whole
    process is frozen (SIGSTOP) and the directory looked at again: a save that finished in
    between is let go (SIGCONT) and the next one tried, so no timing can make this flaky."""
    deadline = time.time() + 600
    try:
        while proc.poll() is None and time.time() < deadline:
            if ckpt.is_dir() and any(".orbax-checkpoint-tmp" in p.name for p in ckpt.iterdir()):
                os.kill(proc.pid, signal.SIGSTOP)
                names = [p.name for p in ckpt.iterdir()]
                tmp = [n for n in names if ".orbax-checkpoint-tmp" in n]
                done = [int(n) for n in names if n.isdigit()]
                if tmp and done:
                    proc.kill()
                    proc.wait()
                    assert int(tmp[0].split(".")[0]) == max(done) + 1, names
                    return max(done), tmp[0]
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.001)
        raise AssertionError(f"no save caught in flight (exit status {proc.poll()})")
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_during_an_async_save_resumes_from_the_previous_step(tmp_path):
    """Checkpoints in a directory outside the workdir (checkpoint.directory); a run killed mid-save
    leaves `N+1.orbax-checkpoint-tmp-*` behind; the rerun reports it, sets it aside beside the
    checkpoints, resumes from step N and finishes."""
    workdir, ckpt = tmp_path / "run", tmp_path / "elsewhere" / "ckpts"
    flags = [f"--workdir={workdir}", f"--config.checkpoint.directory={ckpt}",
             "--config.checkpoint.every=1", "--config.checkpoint.async_save=True",
             "--config.checkpoint.max_to_keep=2", "--config.train.log_every=50"]  # fmt: skip
    killed = _train_cli(tmp_path / "killed.log", *flags, "--config.train.steps=500")
    step, tmp = _kill_mid_save(killed, ckpt)
    assert (ckpt / tmp).is_dir() and (ckpt / str(step)).is_dir()
    assert not (workdir / "checkpoints").exists()  # the checkpoints went where they were told

    log = tmp_path / "resumed.log"
    resumed = _train_cli(log, *flags, f"--config.train.steps={step + 2}")
    assert resumed.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    aside = tmp_path / "elsewhere" / checkpoint.DAMAGED_DIR
    assert f"{ckpt / tmp} is an interrupted save (incomplete); set aside to {aside}/{tmp}-" in text
    assert f"resumed from {ckpt} step {step}" in text, text[-3000:]
    assert not any(".orbax-checkpoint-tmp" in p.name for p in ckpt.iterdir())
    assert (ckpt / str(step + 2)).is_dir()
    # A copy of the config beside checkpoints kept elsewhere: what a resume on another machine
    # (a recreated TPU slice, no old workdir) is checked against.
    assert json.loads((ckpt / "config.json").read_text())["checkpoint"]["directory"] == str(ckpt)
    moved = [p for p in aside.iterdir() if p.name.startswith(tmp)]
    assert len(moved) == 2 and any(p.name.endswith(".reason.txt") for p in moved), moved
    # tlx.evaluate finds the checkpoints where the run's config.json says they are.
    scored = evaluate.evaluate_run(str(workdir), checkpoint_name="latest", eval_steps=1)
    assert scored["checkpoint"] == str(ckpt / str(step + 2)) and scored["step"] == step + 2
