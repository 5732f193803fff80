"""Test setup: 8 host CPU devices for mesh tests, and the shared data directory.

XLA_FLAGS must be set before jax initialises its backend, hence at import time here.
"""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("TLX_DATA_DIR", str(_REPO.parent / "shared" / "data"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ["TLX_DATA_DIR"])
    if not (path / "pretrain").is_dir():
        raise RuntimeError(f"TLX_DATA_DIR={path} does not hold the tlx data layout (no pretrain/)")
    return path


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Every test writes caches under one session-wide temp dir, never into the data dir."""
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tlx_cache"))
