"""A checkpoint saved by 2 processes x 2 devices resumes as 1 process x 4 devices, with data
parallelism or FSDP: the restored arrays are the saved ones bit for bit, and the resumed runs'
losses continue the uninterrupted run's (tests/test_multiprocess.py: 2 x 2 trains as 1 x 4).

The 2 x 2 run trains all STEPS (the learning-rate schedule spans train.steps) and saves at K and
STEPS; each resumed run is a copy of it with step STEPS removed, so it resumes from step K, and
mesh and partition_preset may change on resume (config_checks.RESUMABLE)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tlx import checkpoint, partitioning
from tlx.digests import flatten, tree_digests

REPO = pathlib.Path(__file__).resolve().parents[1]
K, STEPS = 3, 6  # checkpoints at K and STEPS; the resumed runs go from K to STEPS
FLAGS = [
    "--config=configs/bert/pretrain.py:size=tiny,runlocal",
    "--config.train.log_every=1",
    f"--config.train.eval_every={STEPS}",
    f"--config.train.steps={STEPS}",
    f"--config.checkpoint.every={K}",
    "--config.checkpoint.async_save=False",
]
# Resuming under FSDP changes how the step is laid out, not what it computes.
FSDP = [
    "--config.mesh.data=1",
    "--config.mesh.fsdp=4",
    "--config.partition_preset=fsdp",
]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


_free_port = sys.modules["tlx_tests_conftest"].free_port  # tests/conftest.py


def _single(workdir: pathlib.Path, *flags) -> str:
    """`python -m tlx.train` as 1 process x 4 devices; its stdout + stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlx.train", f"--workdir={workdir}", *FLAGS, *flags],
        cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (workdir, log)}: the 2 x 2 run and copies of it cut back to step K, resumed as
    1 x 4 (data parallel) and as 1 x 4 FSDP."""
    root = tmp_path_factory.mktemp("mesh")
    multi = root / "multi"
    proc = subprocess.run(
        ["bash", "launch/multiprocess.sh", "2", f"--workdir={multi}", *FLAGS],
        cwd=REPO,
        env={**_env(2), "PORT": str(_free_port()), "LOCAL_DEVICES": "2", "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (multi / "process_0.log").read_text()
    assert "process_count=2 devices=4 local_devices=2" in log, log[-2000:]
    out = {"multi": (multi, log)}
    for name, flags in {"dp": [], "fsdp": FSDP}.items():
        shutil.copytree(multi, root / name)
        shutil.rmtree(root / name / "checkpoints" / str(STEPS))
        out[name] = (root / name, _single(root / name, *flags))
    return out


@pytest.mark.parametrize("name", ["dp", "fsdp"])
def test_resumed_runs_continue_the_uninterrupted_run(runs, name):
    workdir, log = runs[name]
    assert f"resumed from {workdir / 'checkpoints'} step {K}" in log, log[-3000:]
    assert "warning: checkpoint" not in log and not (workdir / checkpoint.DAMAGED_DIR).exists()
    if name == "fsdp":
        assert "mesh={'data': 1, 'fsdp': 4, 'model': 1}" in log, log[-3000:]
    got, ref = _losses(workdir), _losses(runs["multi"][0])
    assert sorted(got) == list(range(1, STEPS + 1))  # steps 1..K from the 2 x 2 run, then on
    after = range(K + 1, STEPS + 1)
    assert len({ref[s] for s in after}) == len(after), "loss must move"
    # dp: from the restored step-K state, the 1 x 4 program against the 2 x 2 one: the same
    # arithmetic, its all-reduces summed in another order (gloo across processes), bounded as
    # test_multiprocess bounds it (rtol 1e-5). fsdp: parameters gathered and gradients
    # reduce-scattered in yet another order, bounded as tests/test_fsdp.py bounds 5 steps of it.
    tol = {"dp": dict(rtol=1e-5), "fsdp": dict(rtol=0, atol=1e-5)}[name]
    np.testing.assert_allclose([got[s] for s in after], [ref[s] for s in after], **tol)


def test_restored_arrays_are_the_saved_ones_under_another_mesh(runs):
    """The 2 x 2 run's step K read here (1 process) onto a 4-device FSDP layout: every array
    equals the one Orbax reads back unsharded, and both match the digests the run recorded."""
    ckpt = runs["multi"][0] / "checkpoints"
    raw = ocp.CheckpointManager(
        ckpt, item_handlers={"params": ocp.StandardCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True),
    )  # fmt: skip
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whole arrays, on one device
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
        raw.item_metadata(K)["params"],
    )
    saved = raw.restore(K, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    raw.close()
    saved = jax.tree.map(np.asarray, saved["params"])
    meta = json.loads((ckpt / str(K) / "meta" / "metadata").read_text())
    assert {p: d for p, d in meta["digests"].items() if p.startswith("params/")} == tree_digests(
        {"params": saved}
    )

    mesh = partitioning.make_mesh({"data": 1, "fsdp": 4, "model": 1}, jax.devices()[:4])

    def fsdp(x):  # the largest dimension that 4 divides over fsdp, as the fsdp fallback does
        dims = [i for i, n in enumerate(x.shape) if n % 4 == 0]
        spec = [None] * x.ndim
        if dims:
            spec[max(dims, key=lambda i: x.shape[i])] = "fsdp"
        return NamedSharding(mesh, P(*spec))

    shardings = jax.tree.map(fsdp, saved)
    assert sum(s.spec != P(*([None] * len(s.spec))) for s in jax.tree.leaves(shardings)) > 10
    step, params = checkpoint.restore_params(str(ckpt), saved, shardings, K)  # digests verified
    assert step == K
    for path, x in flatten(params).items():
        assert x.sharding == flatten(shardings)[path], path
        np.testing.assert_array_equal(np.asarray(x), flatten(saved)[path], err_msg=path)
