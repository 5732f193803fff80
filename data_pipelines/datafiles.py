"""Opening data files so that every failure names the file, and the line where there is one.

`lines(path)` yields (line number, text) of a text file, gunzipped if its name ends in `.gz`:

  missing file                 FileNotFoundError  `[Errno 2] data file is missing: 'PATH'`
  empty file                   DataError          `PATH: file is empty`
  damaged gzip stream          DataError          `PATH: not a readable gzip file (...)`
  bytes that are not UTF-8     DataError          `PATH:LINE: not valid utf-8: byte 0xff at
                                                  offset N (byte K of the line)`

Readers raise `bad(path, line, what)` (a FormatError `PATH:LINE: what`) for a line they
cannot parse, and `no_records(path, what)` when a well-formed file holds nothing to read. The
happy path decodes in C, as Python's text files do; only a decode error re-reads the file to
find the byte it failed on.
"""

import errno
import gzip
import json
import os
import pathlib
import zlib
from collections.abc import Iterator

from data_pipelines.errors import DataError

_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


class FormatError(DataError):
    """A line or record a reader cannot parse (corpus.CorpusFormatError is this class)."""


def bad(path: str | os.PathLike, line: int, what: str) -> FormatError:
    return FormatError(f"{path}:{line}: {what}")


def no_records(path: str | os.PathLike, what: str) -> FormatError:
    return FormatError(f"{path}: no {what} in the file")


def require(path: str | os.PathLike, what: str = "data file") -> pathlib.Path:
    """`path` as a Path, checked to be an existing, non-empty file."""
    path = pathlib.Path(path)
    if not path.is_file():
        reason = "is a directory, not a file" if path.is_dir() else "is missing"
        raise FileNotFoundError(errno.ENOENT, f"{what} {reason}", str(path))
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def _raw_bytes(path: pathlib.Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def decode_error(path: pathlib.Path, data: bytes, e: UnicodeDecodeError) -> DataError:
    """`e` (from decoding all of `data`, the file's bytes) as PATH:LINE with the byte offset."""
    start = e.start
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    where = "offset" if path.suffix != ".gz" else "offset (of the decompressed text)"
    return DataError(
        f"{path}:{line}: not valid {e.encoding}: byte 0x{data[start]:02x} at {where} {start} "
        f"(byte {start - line_start + 1} of the line): {e.reason}"
    )


def _locate_decode_error(path: pathlib.Path, encoding: str) -> DataError:
    data = _raw_bytes(path)
    # utf-8-sig reports offsets past the BOM it strips; plain utf-8 reads a BOM as a character.
    codec = "utf-8" if encoding.lower().replace("_", "-") == "utf-8-sig" else encoding
    try:
        data.decode(codec)
    except UnicodeDecodeError as e:
        return decode_error(path, data, e)
    # Decodable as a whole but not in the reader's chunks cannot happen for UTF-8; say so.
    return DataError(f"{path}: not valid {encoding} text")


def lines(
    path: str | os.PathLike, *, encoding: str = "utf-8", newline: str | None = None
) -> Iterator[tuple[int, str]]:
    """(1-based line number, line with its ending) of a text file; see the module docstring."""
    path = require(path)
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rt", encoding=encoding, newline=newline) as f:
            for line_no, line in enumerate(f, 1):
                yield line_no, line
    except UnicodeDecodeError:
        raise _locate_decode_error(path, encoding) from None
    except _GZIP_ERRORS as e:
        raise DataError(f"{path}: not a readable gzip file ({type(e).__name__}: {e})") from None
    if line_no == 0:  # a gzip stream of nothing
        raise DataError(f"{path}: file is empty")


def json_records(path: str | os.PathLike, expected: str) -> Iterator[tuple[int, object, str]]:
    """(line number, parsed record, line) of each non-blank line of a JSONL file; a line that
    is not JSON is a FormatError naming the file, the line and what was `expected`."""
    for line_no, line in lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise bad(
                path, line_no, f"bad JSON ({e}): expected {expected}, got {line.strip()[:80]!r}"
            ) from None
        yield line_no, record, line


def read_text(path: str | os.PathLike, *, encoding: str = "utf-8") -> str:
    """The whole text of a file (universal newlines), with the same errors as `lines`."""
    path = require(path)
    try:
        data = _raw_bytes(path)
    except _GZIP_ERRORS as e:
        raise DataError(f"{path}: not a readable gzip file ({type(e).__name__}: {e})") from None
    if not data:
        raise DataError(f"{path}: file is empty")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise decode_error(path, data, e) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
