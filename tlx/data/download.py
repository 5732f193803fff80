"""HTTP downloads for the data fetch: resumed with Range requests after a dropped connection,
retried with backoff on timeouts, 5xx answers and short or corrupted bodies, checked against a
sha256 before the rename into place; and `RangedFile`, a remote archive read through Range
requests so that a few members come out of a large wheel without downloading all of it.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from tlx.data.manifest import CHUNK, sha256_file
from tlx.errors import UserError


class FetchError(UserError, RuntimeError):
    """A dataset could not be fetched; the message names the file or URL at fault."""


class ChecksumError(FetchError):
    """Bytes that do not hash to the manifest's sha256 (nothing was written)."""


class _Retry(Exception):
    """A failed attempt worth repeating (the message says why)."""


class _Incomplete(_Retry):
    """The server closed the connection before the announced length arrived (resumable)."""


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
            while block := resp.read(CHUNK):
                f.write(block)
                got += len(block)
                if total and total > 8 * CHUNK and time.monotonic() - last_report > 5:
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


class NoRanges(Exception):
    """The server answered a Range request with the whole file."""


def get_range(url: str, start: int, end: int, opts: Options, *, size: int, label: str) -> bytes:
    """Bytes start..end (inclusive) of `url`, retried like `download`; the server's total size
    must be `size` (the manifest's), else the archive is not the one the manifest describes."""

    def attempt() -> bytes:
        headers = {"User-Agent": "tlx-data-fetch", "Range": f"bytes={start}-{end}"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=opts.timeout) as resp:  # fmt: skip
            if resp.status != 206:
                raise NoRanges(url)
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
