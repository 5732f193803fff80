"""The fault tests: checkpoint digests see one flipped bit whatever the mesh, and damaged
checkpoints are set aside in turn, the run resuming from the newest good one and ending
bit-identical (params and optimizer state) to an uninterrupted run; init_from falls back the
same way, and an allowed config change resumes over checkpoints that still verify.
"""

import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.bert import pretrain
from tlx import checkpoint, errors, train

_cfg = sys.modules["tlx_tests_conftest"].config_with  # tests/conftest.py
_ckpt_run = sys.modules["tlx_tests_conftest"]._load_module(
    "tlx_tests_checkpointed_run", "checkpointed_run.py"
)  # tests/checkpointed_run.py
RUN, run, _copy_run = _ckpt_run.RUN, _ckpt_run.run, _ckpt_run.copy_run  # run: a fixture
_snapshot, _damage, KINDS = _ckpt_run.snapshot, _ckpt_run.damage, _ckpt_run.KINDS


# --- digests ------------------------------------------------------------------------------------


def test_digests_are_mesh_independent_and_see_one_flipped_bit():
    x = np.random.default_rng(0).normal(size=(16, 12)).astype(np.float32)
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices[:8]).reshape(4, 2), ("data", "model"))
    layouts = [P(), P("data"), P(None, "model"), P("data", "model"), P("model", "data")]
    digests = {
        checkpoint.tree_digests({"p": {"x": jax.device_put(x, NamedSharding(mesh, s))}})["p/x"]
        for s in layouts
    }
    digests.add(checkpoint.tree_digests({"p": {"x": x}})["p/x"])
    assert len(digests) == 1, digests
    words = x.view(np.uint32)
    rng = np.random.default_rng(1)
    for _ in range(50):
        y = words.copy()
        y[tuple(rng.integers(0, n) for n in y.shape)] ^= np.uint32(1 << int(rng.integers(0, 32)))
        assert checkpoint.tree_digests({"p": {"x": y.view(np.float32)}})["p/x"] not in digests
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert checkpoint.tree_digests({"p": {"x": swapped}})["p/x"] not in digests


# --- damaged checkpoints fall back, ending identical to an uninterrupted run -------------------


def _state_at(workdir, step):
    mngr = ocp.CheckpointManager(
        str(pathlib.Path(workdir) / "checkpoints"),
        item_handlers={"params": ocp.StandardCheckpointHandler(),
                       "opt_state": ocp.StandardCheckpointHandler()},
    )  # fmt: skip
    out = mngr.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(), opt_state=ocp.args.StandardRestore()
        ),
    )
    mngr.close()
    return out["params"], out["opt_state"]


def test_damaged_checkpoints_are_set_aside_and_the_run_resumes_identically(run, tmp_path, capfd):
    """Steps 6, 5, 4, 3, 2 each damaged another way: each is reported and set aside in turn,
    the run resumes from step 1 and ends bit-identical (params and optimizer state) to the
    uninterrupted run, with each step logged once in metrics.jsonl."""
    workdir = _copy_run(run, tmp_path)
    damaged = {}
    for step, kind in zip((6, 5, 4, 3, 2), KINDS, strict=True):
        _damage(workdir / "checkpoints" / str(step), kind)
        damaged[step] = _snapshot(workdir / "checkpoints" / str(step))
    metrics_before = (run / "metrics.jsonl").read_text()
    # A kill after a log line but before its checkpoint leaves lines behind, the last torn.
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "loss": 1.0}) + "\n" + '{"step": 8, "lo')
    capfd.readouterr()
    train.train_and_evaluate(_cfg(pretrain, "size=tiny,runlocal", **RUN), str(workdir))
    err = capfd.readouterr().err
    for step in damaged:
        assert f"checkpoint {workdir / 'checkpoints' / str(step)}:" in err, err
        aside = [p for p in (workdir / checkpoint.DAMAGED_DIR).glob(f"{step}-*") if p.is_dir()]
        assert len(aside) == 1, aside
        moved = {p.replace(str(aside[0]), str(workdir / "checkpoints" / str(step))): v[:2]
                 for p, v in _snapshot(aside[0]).items()}  # fmt: skip
        assert moved == {p: v[:2] for p, v in damaged[step].items()}  # set aside, unchanged
    a, b = _state_at(run, 6), _state_at(workdir, 6)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    want = [json.loads(line)["step"] for line in metrics_before.splitlines()]
    assert [json.loads(line)["step"] for line in lines] == want  # each step once


def test_every_checkpoint_damaged_is_an_error_that_keeps_them(capsys, run, tmp_path):
    workdir = _copy_run(run, tmp_path)
    for step in range(1, 7):
        _damage(workdir / "checkpoints" / str(step), "bitflip")
    cfg = _cfg(pretrain, "size=tiny,runlocal", **RUN)
    with pytest.raises(SystemExit) as e:
        errors.cli_boundary(train.train_and_evaluate)(cfg, str(workdir))
    assert e.value.code == 2
    assert "every checkpoint" in capsys.readouterr().err
    assert sorted(p.name.split("-")[0] for p in (workdir / checkpoint.DAMAGED_DIR).iterdir()
                  if p.is_dir()) == ["1", "2", "3", "4", "5", "6"]  # fmt: skip


def test_init_from_a_damaged_latest_checkpoint_uses_the_previous_one(run, tmp_path, capfd):
    source = _copy_run(run, tmp_path)
    _damage(source / "checkpoints" / "6", "bitflip")
    before = _snapshot(source)
    params = jax.tree.map(lambda x: np.zeros_like(x), _state_at(run, 5)[0])
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
    capfd.readouterr()
    loaded, step = checkpoint.load_pretrained(str(source), params, shardings)
    assert step == 5
    assert f"checkpoint {source / 'checkpoints' / '6'}:" in capfd.readouterr().err
    jax.tree.map(np.testing.assert_array_equal, loaded, _state_at(run, 5)[0])
    assert _snapshot(source) == before  # another run's checkpoints are reported, not moved


def test_allowed_change_resumes_and_old_checkpoints_verify(run, tmp_path):
    workdir = _copy_run(run, tmp_path)
    cfg = _cfg(pretrain, "size=tiny,runlocal",
               **{**RUN, "train.steps": 7, "optim.lr": 1e-3,
                  "checkpoint.allow_changes": ("optim.lr",)})  # fmt: skip
    final = train.train_and_evaluate(cfg, str(workdir))
    assert np.isfinite(final["eval/loss"])
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["optim"]["lr"] == 1e-3 and saved["train"]["steps"] == 7
    assert ml_collections.ConfigDict(saved).checkpoint.allow_changes == ["optim.lr"]
