"""Where data is read from and where derived artifacts (vocabularies, token caches) are written."""

import os
import pathlib


def data_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
    """The read-only data root: `override` if given, else $TLX_DATA_DIR."""
    if override is not None:
        path = pathlib.Path(override).expanduser()
        source = "data_dir argument"
    else:
        env = os.environ.get("TLX_DATA_DIR")
        if not env:
            raise RuntimeError(
                "TLX_DATA_DIR is not set: point it at the tlx data root (the folder holding "
                "pretrain/, classification/, models/) or pass data_dir explicitly; "
                "`python -m tlx.data fetch --dir=DIR` downloads and verifies one"
            )
        path = pathlib.Path(env).expanduser()
        source = "TLX_DATA_DIR"
    if not path.is_dir():
        raise FileNotFoundError(f"{source}={path} is not a directory (TLX_DATA_DIR data root)")
    return path


def cache_dir() -> pathlib.Path:
    """Writable cache root: $TLX_CACHE_DIR, else $XDG_CACHE_HOME/tlx, else ~/.cache/tlx."""
    env = os.environ.get("TLX_CACHE_DIR")
    if env:
        path = pathlib.Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
        path = base / "tlx"
    path.mkdir(parents=True, exist_ok=True)
    return path
