"""The conversions `manifest.json` records between an upstream file and the layout's file.

`apply(inputs, ops)` runs a list of op strings over named byte strings, e.g.
`["decode:iso-8859-1"]`, `["strip_bom", "crlf_to_lf"]`, `["nltk_text", "jsonl_docs"]`,
`["parquet_jsonl:entailment,not_entailment"]`, `["concat", "gzip:NAME"]`.
Ops that map file to file act on every input; `concat`, `jsonl_*` and `parquet_jsonl` turn the
inputs into one file. The result must be a single file.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import posixpath
import zipfile
import zlib

# Punctuation of the NLTK inaugural / state_union texts that was typed as Big5 double bytes and
# reads as mojibake in any 8-bit encoding (see those datasets' SOURCE notes).
BIG5_PUNCT = {
    b"\xa1\x58": "\u2014",  # em dash
    b"\xa1\xa6": "\u2019",  # right single quote
    b"\xa1\xa7": "\u201c",  # left double quote
    b"\xa1\xa8": "\u201d",  # right double quote
    b"\xa1\x4b": "\u2026",  # ellipsis
}

Files = list[tuple[str, bytes]]


def archive_members(archive: zipfile.ZipFile, pattern: str, *, label: str) -> Files:
    """Members of a zip archive (wheels are zips) whose name matches `pattern`, sorted."""
    try:
        names = sorted(n for n in archive.namelist() if fnmatch.fnmatchcase(n, pattern))
        members = [(n, archive.read(n)) for n in names]
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"{label}: not a readable zip archive ({e})") from e
    if not names:
        raise ValueError(f"{label}: no archive member matches {pattern!r}")
    return members


def _each(files: Files, fn) -> Files:
    return [(name, fn(data)) for name, data in files]


def nltk_text(data: bytes) -> bytes:
    """An NLTK plaintext file as UTF-8: kept when it already is UTF-8, else decoded as latin-1
    with the Big5 punctuation pairs (two latin-1 characters each) mapped to their characters."""
    try:
        return data.decode("utf-8").encode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    for pair, char in BIG5_PUNCT.items():
        text = text.replace(pair.decode("latin-1"), char)
    return text.encode("utf-8")


def _decode(encoding: str):
    return lambda data: data.decode(encoding).encode("utf-8")


def _jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name))[0]


def _jsonl_docs(files: Files) -> Files:
    docs = ({"id": _stem(n), "text": d.decode("utf-8")} for n, d in sorted(files))
    return [("docs.jsonl", _jsonl(docs))]


def _jsonl_labeled_docs(files: Files) -> Files:
    """`CORPUS/LABEL/FILE` members -> {"id": "LABEL/FILE", "label": LABEL, "text": ...}."""

    def record(name: str, data: bytes) -> dict:
        label, base = name.split("/")[-2:]
        return {"id": f"{label}/{base}", "label": label, "text": data.decode("utf-8")}

    return [("docs.jsonl", _jsonl(record(n, d) for n, d in sorted(files)))]


def _parquet_jsonl(label_names: str):
    names = label_names.split(",")

    def fn(files: Files) -> Files:
        import pyarrow.parquet as pq

        if len(files) != 1:
            raise ValueError(f"parquet_jsonl takes one file, got {len(files)}")
        rows = pq.read_table(io.BytesIO(files[0][1])).to_pylist()
        out = (
            {
                "idx": r["idx"],
                "sentence1": r["sentence1"],
                "sentence2": r["sentence2"],
                "label": names[r["label"]],
            }
            for r in rows
        )
        return [("rows.jsonl", _jsonl(out))]

    return fn


def gzip_bytes(data: bytes, name: str) -> bytes:
    """gzip as the layout stores it: level 9, mtime 0, the original file name in the header."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def _op(op: str):
    kind, _, arg = op.partition(":")
    per_file = {
        "strip_bom": lambda d: d.removeprefix(b"\xef\xbb\xbf"),
        "crlf_to_lf": lambda d: d.replace(b"\r\n", b"\n"),
        "nltk_text": nltk_text,
        "gunzip": gzip.decompress,
    }
    if kind in per_file:
        return lambda files: _each(files, per_file[kind])
    if kind == "decode":
        return lambda files: _each(files, _decode(arg))
    if kind == "gzip":
        return lambda files: _each(files, lambda d: gzip_bytes(d, arg))
    if kind == "concat":
        return lambda files: [("concat", b"".join(d for _, d in files))]
    if kind == "jsonl_docs":
        return _jsonl_docs
    if kind == "jsonl_labeled_docs":
        return _jsonl_labeled_docs
    if kind == "parquet_jsonl":
        return _parquet_jsonl(arg)
    raise ValueError(f"unknown conversion {op!r}")


def apply(files: Files, ops: list[str], *, label: str) -> bytes:
    try:
        for op in ops:
            files = _op(op)(files)
    except (ValueError, KeyError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{label}: conversion {ops} failed: {e}") from e
    if len(files) != 1:
        raise ValueError(f"{label}: conversions {ops} left {len(files)} files, not one")
    return files[0][1]
