"""The layering of STYLE.md, read from the source with `ast` (nothing is imported).

Top to bottom: launch/ and tests/ may import anything; configs/ imports tlx and data_pipelines;
tlx/ imports data_pipelines but never configs/; data_pipelines/ imports neither. Inside tlx/,
nothing imports a CLI. Every import counts, at any depth: a function-level lazy import is still
an upward import.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("tlx", "data_pipelines", "configs")
# What each layer must not import (the layers above it).
FORBIDDEN = {
    "data_pipelines": ("tlx", "configs", "launch", "tests"),
    "tlx": ("configs", "launch", "tests"),
    "configs": ("launch", "tests"),
}
CLIS = (
    "tlx.train",
    "tlx.evaluate",
    "tlx.generate",
    "tlx.translate",
    "tlx.word_eval",
    "tlx.convert.__main__",
    "tlx.data.__main__",
)


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, root: pathlib.Path = REPO) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, in line order. `from a import b` gives
    `a.b` (b may be a submodule); relative imports are resolved against the file's package."""
    found = []
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                name = "" if alias.name == "*" else alias.name
                found.append((node.lineno, ".".join(p for p in (base, name) if p)))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _sources(layer: str) -> list[pathlib.Path]:
    files = sorted((REPO / layer).rglob("*.py"))
    assert files, f"no .py files under {layer}/"
    return files


def _violations(files, banned, skip_own=False, root: pathlib.Path = REPO) -> list[str]:
    """`path:line: import NAME` for each import of a name within one of `banned` (skip_own: not
    counting a module's imports of itself)."""
    found = []
    for path in files:
        own = _module_name(path, root)
        for line, name in _imports(path, root):
            if any(_within(name, b) for b in banned) and not (skip_own and _within(name, own)):
                found.append(f"{path.relative_to(root)}:{line}: import {name}")
    return found


def test_the_import_reader_sees_lazy_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    src = pkg / "mod.py"
    src.write_text(
        "import os.path\n"
        "from . import sibling\n"
        "from .. import top\n"
        "def f():\n"
        "    from configs.bert import finetune\n"
        "    import importlib; importlib.import_module('tlx.train')\n"
    )
    assert _imports(src, tmp_path) == [
        (1, "os.path"),
        (2, "pkg.sibling"),
        (3, "top"),
        (5, "configs.bert.finetune"),
        (6, "importlib"),
        (6, "tlx.train"),
    ]
    assert _violations([src], ("configs", "tlx.train"), root=tmp_path) == [
        "pkg/mod.py:5: import configs.bert.finetune",
        "pkg/mod.py:6: import tlx.train",
    ]
    assert _violations([src], ("tlx.trai",), root=tmp_path) == []  # whole names only


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_layer_above_it(layer):
    found = _violations(_sources(layer), FORBIDDEN[layer])
    assert not found, (
        f"{layer}/ must not import {', '.join(FORBIDDEN[layer])} (STYLE.md, layering):\n"
        + "\n".join(found)
    )


def test_evaluate_does_not_import_train():
    found = _violations([REPO / "tlx" / "evaluate.py"], ("tlx.train",))
    assert not found, "tlx/evaluate.py must not import tlx.train:\n" + "\n".join(found)


def test_no_tlx_module_imports_a_cli():
    found = _violations(_sources("tlx"), CLIS, skip_own=True)
    assert not found, (
        f"no tlx module may import a CLI ({', '.join(CLIS)}); move what they share into "
        "a module they both import:\n" + "\n".join(found)
    )
