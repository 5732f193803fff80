"""The datasets' manifest (`manifest.json`) and the check a layout file passes against it: its
bytes hash to the manifest's sha256 (or, for a gzip the manifest builds, their content does).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import zlib
from collections.abc import Iterable

MANIFEST = pathlib.Path(__file__).with_name("manifest.json")
CHUNK = 1 << 20  # bytes read (or downloaded) at a time


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    """The manifest at `path`, else $TLX_DATA_MANIFEST, else the one shipped with tlx."""
    with open(path or os.environ.get("TLX_DATA_MANIFEST") or MANIFEST, encoding="utf-8") as f:
        manifest = json.load(f)
    for name, spec in manifest["datasets"].items():
        for key in ("title", "license", "citation", "source", "files"):
            if key not in spec:
                raise ValueError(f"manifest dataset {name!r} lacks {key!r}")
    return manifest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def mismatch(data: bytes, spec: dict) -> str | None:
    """None when `data` are the manifest's bytes (or, for a gzip the manifest builds, hold the
    same decompressed bytes: zlib versions may differ in how they compress), else their sha256."""
    got = sha256_bytes(data)
    if got == spec["sha256"]:
        return None
    if "content_sha256" in spec:
        try:
            if sha256_bytes(gzip.decompress(data)) == spec["content_sha256"]:
                return None
        except (OSError, EOFError, zlib.error):
            pass
    return got


def verified(path: pathlib.Path, spec: dict) -> bool:
    """True when `path` exists with the manifest's bytes."""
    return path.is_file() and mismatch(path.read_bytes(), spec) is None


def missing_files(manifest: dict, names: Iterable[str], root: pathlib.Path) -> list[str]:
    out = []
    for name in names:
        for path, spec in manifest["datasets"][name]["files"].items():
            if not verified(root / path, spec):
                out.append(path)
    return out
