"""`python -m tlx.data list` / `python -m tlx.data fetch [NAMES...] --dir=DIR` (also `tlx-data`).

  list [NAMES]             every dataset: files, size, license, source, TFDS alternative
                           (with NAMES: also citation, and each file's sha256 and origin)
  fetch [NAMES] --dir=DIR  download, verify and lay out NAMES (default: all) under DIR
        --offline          download nothing; fail with the list of missing files, if any
        --mirror=URL       fetch the final layout from URL/<path> (TLX_DATA_MIRROR)
        --base_url=URL     fetch upstream files from URL/github/..., URL/pypi/...
                           instead of the public hosts (TLX_DATA_BASE_URL)

DIR defaults to $TLX_DATA_DIR, else the cache (~/.cache/tlx/data, honouring XDG_CACHE_HOME and
TLX_CACHE_DIR). Point TLX_DATA_DIR at DIR afterwards to train on it.
"""

import argparse
import os
import sys

from tlx.data import fetch as fetching


def list_datasets(manifest: dict, names=()) -> str:
    """Two lines per dataset (name, files, size, license, TFDS name; then title and source);
    with `names`, also the citation and every file's sha256 and origin."""
    lines = []
    for name in fetching.select(manifest, names):
        spec = manifest["datasets"][name]
        size = fetching.human(sum(f["size"] for f in spec["files"].values()))
        flag = "" if spec.get("open") else "[not open] "
        tfds = f"  (TFDS: {spec['tfds']})" if spec.get("tfds") else ""
        lines.append(
            f"{name:<23} {len(spec['files']):>2} files {size:>9}  {flag}{spec['license']}{tfds}"
        )
        lines.append(f"{'':<23} {spec['title']}; from {spec['source']}")
        if names:
            lines.append(f"{'':<23} cite: {spec['citation']}")
            for path, f in spec["files"].items():
                origin = f.get("url") or f.get("archive") or f"{len(f['urls'])} files, concatenated"
                ops = f" | {', '.join(f['convert'])}" if f.get("convert") else ""
                lines.append(f"{'':<25}{path}  {f['sha256'][:12]}  <- {origin}{ops}")
    if not names:
        total = sum(f["size"] for s in manifest["datasets"].values() for f in s["files"].values())
        lines.append(f"\n{len(manifest['datasets'])} datasets, {fetching.human(total)} laid out.")
    lines.append("[not open]: research-use terms or no license; read them before use or sharing.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlx.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="print the manifest with sizes and licenses")
    ls.add_argument("names", nargs="*", help="show these datasets in full")
    f = sub.add_parser("fetch", help="download, verify and lay out datasets")
    f.add_argument("names", nargs="*", help="dataset names (default: all); see `list`")
    f.add_argument("--dir", default=None, help="data root to write (default: see module doc)")
    f.add_argument("--offline", action="store_true", help="fail instead of downloading")
    f.add_argument("--mirror", default=os.environ.get("TLX_DATA_MIRROR"))
    f.add_argument("--base_url", default=os.environ.get("TLX_DATA_BASE_URL"))
    f.add_argument("--retries", type=int, default=4)
    f.add_argument("--timeout", type=float, default=60.0, help="seconds per network operation")
    args = parser.parse_args(argv)
    if args.command == "fetch" and args.retries < 0:
        parser.error(f"--retries={args.retries}: must be >= 0")
    if args.command == "fetch" and not args.timeout > 0:
        parser.error(f"--timeout={args.timeout}: must be > 0 seconds")
    manifest = fetching.load_manifest()
    try:
        if args.command == "list":
            print(list_datasets(manifest, args.names))
            return 0
        opts = fetching.Options(
            root=args.dir or fetching.default_root(),
            base_url=args.base_url,
            mirror=args.mirror,
            offline=args.offline,
            retries=args.retries,
            timeout=args.timeout,
        )
        counts = fetching.fetch(args.names, opts, manifest)
    except fetching.FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{opts.root}: {counts['fetched']} file(s) fetched, {counts['present']} already present")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
