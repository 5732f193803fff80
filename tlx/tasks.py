"""`python -m tlx.tasks`: the downstream tasks of the registry (data_pipelines), as a table.

  list              one row per task: name, kind, classes, primary metric, default seq_len,
                    train / dev / test sizes (read from $TLX_DATA_DIR; * = cut from a file
                    by a content hash, `TaskData.carve`), what it is, where its data is
  list --markdown   the same as the README's task table
  list --no-sizes   without reading any data file
  readme [PATH]     rewrite the task table of PATH (default README.md) from the registry

A task is added by one registry entry in data_pipelines (README, "Adding a task"); this table,
the configs' defaults and the launchers' task lists all read it from there.
"""

import argparse
import pathlib
import sys

import data_pipelines
from data_pipelines.errors import DataError
from tlx.errors import cli_boundary

COLUMNS = ("task", "kind", "classes", "metric", "seq_len", "train / dev / test", "what", "data")
SPLITS = ("train", "validation", "test")
BEGIN = "<!-- task table: python -m tlx.tasks readme -->"
END = "<!-- end of task table -->"


def _classes(labels: tuple[str, ...], kind: str) -> str:
    if kind == "tagging" or len(labels) > 6:
        return f"{len(labels)} tags" if kind == "tagging" else str(len(labels))
    return f"{len(labels)}: {', '.join(labels)}"


def _sizes(name: str, info, data_dir) -> str:
    if info.needs_network:
        return "from TFDS (" + ", ".join(info.splits) + ")"
    try:
        sizes = data_pipelines.tasks.split_sizes(name, data_dir)
    except (FileNotFoundError, DataError) as e:
        return f"unreadable: {type(e).__name__}"
    carved = data_pipelines.tasks.carved_splits(name)
    return " / ".join(
        f"{sizes[s]:,}" + ("\\*" if s in carved else "") if s in sizes else "-" for s in SPLITS
    )


def rows(sizes: bool = True, data_dir=None) -> list[tuple[str, ...]]:
    """One row of COLUMNS per registered downstream task, in registry order."""
    out = []
    for name in data_pipelines.downstream_tasks(network=True):
        info = data_pipelines.downstream_info(name)
        out.append(
            (
                name,
                info.kind,
                _classes(info.labels, info.kind),
                info.primary_metric,
                str(info.seq_len),
                _sizes(name, info, data_dir) if sizes else " / ".join(info.splits),
                info.title,
                info.data,
            )
        )
    return out


def markdown(table: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    lines += [f"| `{r[0]}` | " + " | ".join(r[1:]) + " |" for r in table]
    return "\n".join(lines)


def text(table: list[tuple[str, ...]]) -> str:
    table = [COLUMNS, *((*r[:5], r[5].replace("\\*", "*"), *r[6:]) for r in table)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in table)


def replace_table(readme: str, table: str) -> str:
    """`readme` with the text between its BEGIN and END markers replaced by `table`."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise ValueError(f"the README needs one {BEGIN!r} line and one {END!r} line")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


@cli_boundary
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlx.tasks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="print the registered downstream tasks")
    ls.add_argument("--markdown", action="store_true", help="as the README's markdown table")
    ls.add_argument("--no-sizes", action="store_true", help="do not read the data files")
    rd = sub.add_parser("readme", help="rewrite the README's task table")
    rd.add_argument("path", nargs="?", default="README.md")
    args = parser.parse_args(argv)
    if args.command == "list":
        table = rows(sizes=not args.no_sizes)
        print(markdown(table) if args.markdown else text(table))
        return 0
    path = pathlib.Path(args.path)
    path.write_text(replace_table(path.read_text(encoding="utf-8"), markdown(rows())))
    print(f"{path}: task table rewritten ({len(data_pipelines.downstream_tasks(True))} tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
