"""The data a run reads, checked before it trains: files against the manifest, one example each.

  verify_files(files, root)    every file exists and is non-empty; one the manifest lists (by
                               its path under `root`) has the manifest's size and sha256
  check_run_data(cfg, splits)  the pre-flight of tlx.train / tlx.evaluate: verify the files
                               each split reads (data_pipelines.tasks.split_files) unless
                               `data.verify` is False, then read one example of each split

A file's sha256 is computed once and kept in `$TLX_CACHE_DIR/data_verify.json`, keyed by its
absolute path, size and mtime_ns, so a later run costs one stat() per file and a rewritten or
touched file is hashed again. A gzip file the fetcher builds (`content_sha256` in the manifest)
may differ in its compressed bytes between zlib versions; it passes when its decompressed bytes
hash to the manifest's content_sha256.

Errors (exit status 2 at the CLIs, tlx.errors): a missing file is a FileNotFoundError naming
it; an empty or mismatching file a DataError naming the file, the expected and actual size or
sha256, the fetch command that replaces it and the flag that skips the check.
"""

import errno
import functools
import gzip
import json
import os
import pathlib
import stat
import zlib
from collections.abc import Iterable, Sequence

import ml_collections
import seqio

import data_pipelines
from data_pipelines import cache, paths
from data_pipelines.errors import DataError
from tlx.data import fetch
from tlx.errors import ConfigError

HASH_CACHE = "data_verify.json"
_SKIP = "--config.data.verify=False"


def _build_index(manifest: dict) -> dict[str, tuple[str, dict]]:
    """Layout path -> (the first dataset listing it, its file spec)."""
    index: dict[str, tuple[str, dict]] = {}
    for name, spec in manifest["datasets"].items():
        for rel, file_spec in spec["files"].items():
            index.setdefault(rel, (name, file_spec))
    return index


@functools.cache
def _index_of(manifest_file: str) -> dict[str, tuple[str, dict]]:
    return _build_index(fetch.load_manifest(manifest_file))


def manifest_index(manifest: dict | None = None) -> dict[str, tuple[str, dict]]:
    """The index of `manifest`, else of the manifest fetch.load_manifest reads (cached)."""
    if manifest is not None:
        return _build_index(manifest)
    return _index_of(str(os.environ.get("TLX_DATA_MANIFEST") or fetch.MANIFEST))


class _Hashes:
    """sha256 (and decompressed sha256) of files, remembered by (path, size, mtime_ns)."""

    def __init__(self):
        self.path = paths.cache_dir() / HASH_CACHE
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.path.exists():
            try:
                entries = json.loads(self.path.read_text(encoding="utf-8"))
                if not isinstance(entries, dict):
                    raise ValueError(f"a JSON {type(entries).__name__}, not an object")
                self.entries = entries
            except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError too
                cache.report_corrupt(self.path, f"{type(e).__name__}: {str(e)[:200]}")

    def get(self, path: str, st: os.stat_result, key: str) -> str:
        entry = self.entries.get(path)
        if not (
            isinstance(entry, dict)
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
        ):
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            self.entries[path] = entry
        if key not in entry:
            if key == "sha256":
                entry[key] = fetch.sha256_file(pathlib.Path(path))
            else:  # content_sha256: of the decompressed bytes
                try:
                    with gzip.open(path, "rb") as f:
                        entry[key] = fetch.sha256_bytes(f.read())
                except (OSError, EOFError, zlib.error) as e:
                    entry[key] = f"not a readable gzip file ({type(e).__name__})"
            self.changed = True
        return entry[key]

    def save(self) -> None:
        if self.changed:
            data = json.dumps(self.entries, indent=0, sort_keys=True).encode()
            fetch.write_atomic(self.path, data)


def _missing(path: pathlib.Path, dataset: str | None, root: pathlib.Path) -> FileNotFoundError:
    what = "data file is a directory" if path.is_dir() else "data file is missing"
    if dataset:
        what += f" (dataset {dataset}: `python -m tlx.data fetch {dataset} --dir={root}`)"
    return FileNotFoundError(errno.ENOENT, what, str(path))


def _fix(dataset: str, root: pathlib.Path) -> str:
    return (
        f"fetch it again with `python -m tlx.data fetch {dataset} --dir={root}`, or skip this "
        f"check with {_SKIP}"
    )


def verify_files(
    files: Iterable[str | os.PathLike], root: str | os.PathLike, *, manifest: dict | None = None
) -> None:
    """Checks `files` (absolute paths) under the data root `root`; see the module docstring."""
    root = pathlib.Path(root)
    root_abs = pathlib.Path(os.path.abspath(root))
    index = manifest_index(manifest)
    hashes = None
    try:
        for file in dict.fromkeys(pathlib.Path(os.path.abspath(f)) for f in files):
            try:
                rel = file.relative_to(root_abs).as_posix()
            except ValueError:  # outside the data root: a user's own file
                rel = None
            dataset, spec = index.get(rel, (None, None))
            try:
                st = os.stat(file)
            except FileNotFoundError:
                raise _missing(file, dataset, root) from None
            if not stat.S_ISREG(st.st_mode):
                raise _missing(file, dataset, root)
            if spec is None:
                if st.st_size == 0:
                    raise DataError(f"{file}: file is empty")
                continue
            gzip_content = "content_sha256" in spec  # its compressed size may differ legitimately
            if st.st_size != spec["size"] and not gzip_content:
                raise DataError(
                    f"{file}: {st.st_size} bytes, but the manifest says {spec['size']} bytes "
                    f"(sha256 {spec['sha256']}) for dataset {dataset}: {_fix(dataset, root)}"
                )
            hashes = hashes or _Hashes()
            actual = hashes.get(str(file), st, "sha256")
            if actual == spec["sha256"]:
                continue
            if gzip_content:
                content = hashes.get(str(file), st, "content_sha256")
                if content == spec["content_sha256"]:
                    continue
                raise DataError(
                    f"{file}: its decompressed bytes hash to {content}, but the manifest says "
                    f"{spec['content_sha256']} (file sha256 {actual}, {st.st_size} bytes; the "
                    f"manifest's: {spec['sha256']}, {spec['size']} bytes) for dataset "
                    f"{dataset}: {_fix(dataset, root)}"
                )
            raise DataError(
                f"{file}: sha256 {actual}, but the manifest says {spec['sha256']} (size "
                f"{st.st_size} bytes, as the manifest says: the content differs) for dataset "
                f"{dataset}: {_fix(dataset, root)}"
            )
    finally:
        if hashes is not None:
            hashes.save()


def check_run_data(cfg: ml_collections.ConfigDict, splits: Sequence[str]) -> None:
    """Fails in seconds if a split of the run's task cannot be read: verifies the files each
    split reads (unless cfg.data.verify is False), then reads one example of each split.

    cfg.data.task_name must be resolved (tlx.steps.resolve_task). Raises ConfigError for a
    split the task lacks, FileNotFoundError / DataError for missing or bad data, and DataError
    for a split that yields no examples.
    """
    task = cfg.data.task_name
    splits = list(dict.fromkeys(splits))
    available = tuple(seqio.get_mixture_or_task(task).splits)
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise ConfigError(
            f"task {task!r} has no split {unknown[0]!r} (it has {available}); check data.eval_split"
        )
    root = paths.data_dir(cfg.data.get("data_dir") or None)
    if cfg.data.get("verify", True):
        files = [f for s in splits for f in data_pipelines.tasks.split_files(task, s, root)]
        verify_files(files, root)
    for split in splits:
        ds = data_pipelines.get_dataset(
            task,
            split=split,
            seq_len=cfg.data.seq_len,
            seed=cfg.seed,
            shuffle=False,
            shard_index=0,
            num_shards=1,
            num_epochs=1,
        )
        if next(iter(ds.take(1)), None) is None:
            raise DataError(f"task {task!r}: split {split!r} yields no examples")
