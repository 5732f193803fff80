"""A tiny BERT pretraining run with a checkpoint at every step, shared by test_bad_inputs.py and
test_checkpoint_faults.py: the run (trained once per session), copies of it, ways to damage a
checkpoint, and snapshots that show a command left every file as it was.

Test modules load it through tests/conftest.py's loader (tests/ is not on sys.path), as
`sys.modules["tlx_tests_conftest"]._load_module("tlx_tests_checkpointed_run", FILE_NAME)`.
"""

import glob
import hashlib
import json
import os
import pathlib
import shutil
import sys

import pytest

from configs.bert import pretrain
from tlx import train

_cfg = sys.modules["tlx_tests_conftest"].config_with  # tests/conftest.py
_FINISHED: dict[str, pathlib.Path] = {}  # the run, once trained in this session


def snapshot(*roots) -> dict:
    """Every file under `roots`: (sha256, size, mtime_ns), to show nothing was touched."""
    out = {}
    for root in roots:
        for path in sorted(pathlib.Path(root).rglob("*")):
            if path.is_file():
                st = path.stat()
                out[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size,
                                  st.st_mtime_ns)  # fmt: skip
    return out


# A tiny BERT pretraining run of 6 steps with a checkpoint at every step.
RUN = {"train.steps": 6, "checkpoint.every": 1, "checkpoint.max_to_keep": None}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run (RUN): checkpoints at steps 1..6. Trained once per session, whichever
    module asks first; tests that damage it work on a `copy_run` of it."""
    if "run" not in _FINISHED:
        workdir = tmp_path_factory.mktemp("run")
        train.train_and_evaluate(_cfg(pretrain, "size=tiny,runlocal", **RUN), str(workdir))
        _FINISHED["run"] = workdir
    return _FINISHED["run"]


def copy_run(run, tmp_path) -> pathlib.Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def damage(step_dir: pathlib.Path, kind: str) -> None:
    """Damages one checkpoint step directory: one of KINDS."""
    data = max(glob.glob(str(step_dir / "params" / "ocdbt.process_0" / "d" / "*")),
               key=os.path.getsize)  # fmt: skip
    if kind == "bitflip":
        raw = bytearray(pathlib.Path(data).read_bytes())
        raw[len(raw) // 2] ^= 0x04
        pathlib.Path(data).write_bytes(bytes(raw))
    elif kind == "truncated":
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 3)
    elif kind == "item_missing":
        shutil.rmtree(step_dir / "opt_state")
    elif kind == "manifest_missing":
        os.remove(step_dir / "params" / "manifest.ocdbt")
    elif kind == "digest_edited":
        meta = step_dir / "meta" / "metadata"
        record = json.loads(meta.read_text())
        path = sorted(record["digests"])[0]
        record["digests"][path] = "0" * 16
        meta.write_text(json.dumps(record))
    else:
        raise ValueError(kind)


KINDS = ("bitflip", "truncated", "item_missing", "manifest_missing", "digest_edited")
