"""Test setup: 8 host CPU devices for mesh tests, the shared data directory, and shared helpers
(config overrides, a fake training run for the converter tests).

XLA_FLAGS must be set before jax initialises its backend, hence at import time here.
"""

import os
import pathlib
import socket

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_REPO = pathlib.Path(__file__).resolve().parents[1]

if "TLX_DATA_DIR" not in os.environ:
    # ../shared/data beside the clone (CI), else a layout fetched by `python -m tlx.data fetch`.
    _shared = _REPO.parent / "shared" / "data"
    if not _shared.is_dir():
        from tlx.data import fetch as _fetch

        _shared = _fetch.default_root()
    os.environ["TLX_DATA_DIR"] = str(_shared)

import importlib.util  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


def _load_module(name: str, filename: str):
    """A helper module beside this file, by path (--import-mode=importlib: tests/ is not on
    sys.path), registered once in sys.modules under `name`."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, pathlib.Path(__file__).with_name(filename)
        )
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


# tests/parity.py (float64-referenced parity bounds): `sys.modules["tlx_tests_parity"]`.
_load_module("tlx_tests_parity", "parity.py")
# The plain helpers below, for test modules (which cannot import conftest by name):
# `sys.modules["tlx_tests_conftest"].config_with(...)`.
sys.modules["tlx_tests_conftest"] = sys.modules[__name__]


def free_port() -> int:
    """A TCP port free on localhost now: a multi-process run's coordinator."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def config_with(module, arg: str, **overrides):
    """`module.get_config(arg)`, unlocked, with dotted overrides: `**{"train.steps": 3}`."""
    cfg = module.get_config(arg)
    cfg.unlock()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


class FakeTrainState:
    """What tlx.checkpoint.save reads of a TrainState: params and an optimizer state."""

    def __init__(self, params):
        import jax.numpy as jnp

        self.params, self.opt_state = params, {"count": jnp.zeros((), jnp.int32)}


def fake_run(workdir, params, model_config):
    """A training run's layout: config.json with a "model" section, checkpoints at steps 2 and 5
    (step 2 holds zeros, so exporting anything but the latest step fails the parity checks)."""
    import json

    import jax
    import numpy as np

    from tlx import checkpoint

    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"seed": 0, "model": model_config}))
    mngr = checkpoint.manager(str(workdir / "checkpoints"), every=1, async_save=False)
    for step, p in ((2, jax.tree.map(np.zeros_like, params)), (5, params)):
        checkpoint.save(mngr, step, FakeTrainState(p), {"step": step}, force=True)
    mngr.wait_until_finished()
    mngr.close()
    return workdir


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ["TLX_DATA_DIR"])
    if not (path / "pretrain").is_dir():
        raise RuntimeError(f"TLX_DATA_DIR={path} does not hold the tlx data layout (no pretrain/)")
    return path


@pytest.fixture(scope="session")
def loopback():
    """tests/loopback_upstream.py: a local HTTP server standing in for the datasets' hosts."""
    return _load_module("loopback_upstream", "loopback_upstream.py")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Every test writes caches under one session-wide temp dir, never into the data dir."""
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tlx_cache"))


@pytest.fixture
def fake_bert_batches():
    """Random BERT pretraining batches with the google-research feature names (numpy)."""
    import numpy as np

    def make(n=3, b=8, length=64, p=10, vocab=30522, seed=0):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            positions = np.sort(rng.permuted(np.tile(np.arange(1, length), (b, 1)), axis=1)[:, :p])
            out.append(
                {
                    "input_ids": rng.integers(5, vocab, (b, length)).astype(np.int32),
                    "input_mask": np.ones((b, length), np.int32),
                    "segment_ids": (np.arange(length)[None] >= length // 2)
                    .repeat(b, 0)
                    .astype(np.int32),
                    "masked_lm_positions": positions.astype(np.int32),
                    "masked_lm_ids": rng.integers(5, vocab, (b, p)).astype(np.int32),
                    "masked_lm_weights": np.ones((b, p), np.float32),
                    "next_sentence_labels": rng.integers(0, 2, (b,)).astype(np.int32),
                    "example_weight": np.ones((b,), np.float32),
                }
            )
        return out

    return make
