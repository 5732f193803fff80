"""Entries of the derived-data cache (paths.cache_dir()): written atomically, checked on load.

Two kinds of entry, each trusted only when it matches the digest written with it:
  arrays  an .npz whose `__sha256__` member hashes the other members (names, dtypes, shapes,
          bytes): the token cache, the word corpus, GloVe co-occurrences;
  file    any file with `NAME.sha256` beside it, written once the file is in place: trained
          SentencePiece models, the Multi30k target word list.
Writes go to `.NAME.tmp-PID` in the entry's folder, then os.replace, so an interrupted write
leaves either no entry or one whose digest does not match, never a partial entry that is
trusted. A corrupt, truncated or foreign entry is reported on one stderr line,
`cache entry PATH is corrupt (REASON); rebuilding`, and the caller builds it again in place.
"""

import hashlib
import os
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np

DIGEST_KEY = "__sha256__"
_ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 20


def report_corrupt(path: str | os.PathLike, reason: str) -> None:
    print(f"cache entry {path} is corrupt ({reason}); rebuilding", file=sys.stderr, flush=True)


def tmp_path(path: pathlib.Path) -> pathlib.Path:
    """The temporary name a write of `path` goes to (unique to this process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


# ---------------------------------------------------------------------------- arrays entries


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes `arrays` (and their digest) as the .npz entry `path`, atomically."""
    path = pathlib.Path(path)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays, **{DIGEST_KEY: np.array(arrays_digest(arrays))})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_arrays(
    path: str | os.PathLike,
    names: Sequence[str],
    check: Callable[[dict[str, np.ndarray]], str | None] | None = None,
) -> dict[str, np.ndarray] | None:
    """The arrays of the entry `path`; None if there is none, or if it is corrupt (reported).

    `check(arrays)` may return a reason to reject an entry whose digest matches (a stale
    layout)."""
    path = pathlib.Path(path)
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != _ZIP_MAGIC:  # np.load would try it as .npy or pickle instead
            report_corrupt(
                path, f"not an .npz archive: {path.stat().st_size} bytes starting {magic!r}"
            )
            return None
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - whatever fails to load is a corrupt entry
        report_corrupt(path, f"unreadable: {type(e).__name__}: {str(e)[:200]}")
        return None
    stored = arrays.pop(DIGEST_KEY, None)
    missing = [n for n in names if n not in arrays]
    if stored is None:
        reason = f"no {DIGEST_KEY} member: written by an older tlx or not by tlx"
    elif missing:
        reason = f"lacks {missing}"
    elif str(stored) != arrays_digest(arrays):
        reason = "its arrays do not match their sha256"
    else:
        reason = check(arrays) if check else None
    if reason:
        report_corrupt(path, reason)
        return None
    return arrays


# ---------------------------------------------------------------------------- file entries


def _digest_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f"{path.name}.sha256")


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Moves the finished file `tmp` to the entry `path`, then writes its digest beside it."""
    tmp, path = pathlib.Path(tmp), pathlib.Path(path)
    digest = _sha256_file(tmp)
    os.replace(tmp, path)
    sidecar = _digest_path(path)
    sidecar_tmp = tmp_path(sidecar)
    try:
        sidecar_tmp.write_text(digest + "\n", encoding="ascii")
        os.replace(sidecar_tmp, sidecar)
    finally:
        sidecar_tmp.unlink(missing_ok=True)


def trusted_file(path: str | os.PathLike) -> bool:
    """True when the entry `path` exists and matches its digest; a mismatch is reported."""
    path = pathlib.Path(path)
    if not path.exists():
        return False
    sidecar = _digest_path(path)
    try:
        expected = sidecar.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        reason = f"no readable {sidecar.name} beside it: an interrupted write or an older tlx"
        report_corrupt(path, reason)
        return False
    try:
        actual = _sha256_file(path)
    except OSError as e:
        report_corrupt(path, f"unreadable: {e}")
        return False
    if actual != expected:
        report_corrupt(path, f"sha256 {actual[:12]}... but {sidecar.name} says {expected[:12]}...")
        return False
    return True
