"""Damaged copies of the real data layout, for the bad-data tests (test_bad_data.py,
test_bad_data_preflight.py, test_bad_caches.py): a temporary data root built from small pieces
of $TLX_DATA_DIR (never written), and `expect`, the check that an error names the file (and
line), that the CLIs would exit with status 2, and that no input file changed.

Test modules load it through tests/conftest.py's loader (tests/ is not on sys.path), as
`sys.modules["tlx_tests_conftest"]._load_module("tlx_tests_damaged_data", "damaged_data.py")`.
"""

import gzip
import os
import pathlib
import shutil

import pytest

from tlx import errors

SOURCE = pathlib.Path(os.environ["TLX_DATA_DIR"])
VOCAB_TXT = "models/minilm_l6_bert_uncased/vocab.txt"


def head(rel: str, n: int) -> list[bytes]:
    """The first n lines (with their endings) of a real layout file, gunzipped if .gz."""
    path = SOURCE / rel
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        return [f.readline() for _ in range(n)]


def write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def copy(root: pathlib.Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOURCE / rel, root / rel)


def snapshot(*roots: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expect(error_type, call, inputs, path, line: int | None = None, *fragments) -> str:
    """Runs `call`, which must raise `error_type` naming `path` (and `line`, and `fragments`)
    with exit status 2, and leave every file under `inputs` (a folder or a tuple of folders)
    as it was; returns the message."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    before = snapshot(*inputs)
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    print(f"\n  [{error_type.__name__}] {message}")
    assert (f"{path}:{line}:" if line is not None else str(path)) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert errors.exit_status(info.value) == errors.EXIT_BAD_INPUT
    assert snapshot(*inputs) == before, "an input file was changed"
    return message


def sst2_root(root: pathlib.Path, *extra: str) -> pathlib.Path:
    """A data root holding the vocabulary, SST-2's train split and `extra` layout files."""
    copy(root, VOCAB_TXT, "classification/sst2/stsa.binary.train", *extra)
    return root


def flip(path: pathlib.Path, at: int = 100) -> None:
    """Changes one letter (same size, still a valid line) and keeps the file's mtime."""
    data, st = bytearray(path.read_bytes()), path.stat()
    while not chr(data[at]).isalpha():
        at += 1
    data[at] = ord("q") if data[at] != ord("q") else ord("z")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """TLX_CACHE_DIR set to a fresh folder of this test's own."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TLX_CACHE_DIR", str(path))
    return path
