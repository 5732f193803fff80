"""The tagging corpora's file formats: one-token-per-line files -> `Sentence`s of tag names.

CoNLL-2003 (`token TAG`), WNUT-17 (`token<TAB>TAG`) and CoNLL-U (FORM and UPOS); a line a reader
cannot parse, or an unknown tag, is a FormatError naming the file and line (datafiles.bad).
"""

import pathlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from data_pipelines import datafiles

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
WNUT17_TAGS = (
    "O",
    *(
        f"{bio}-{kind}"
        for kind in ("corporation", "creative-work", "group", "location", "person", "product")
        for bio in "BI"
    ),
)
UPOS_TAGS = (
    *("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM"),
    *("PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"),
)


class Sentence(NamedTuple):
    words: tuple[str, ...]
    tags: tuple[str, ...]


_BOUNDARY = object()  # a line that ends the current sentence
_SKIP = object()  # a line that carries no token


class _BadLine(Exception):
    """Raised by a line parser; `_read_sentences` turns it into a FormatError (file:line)."""


def _read_sentences(
    path: str | pathlib.Path, tags: Sequence[str], parse: Callable[[str], object]
) -> list[Sentence]:
    """Sentences of a one-token-per-line file; `parse(line)` -> (word, tag), _BOUNDARY or _SKIP."""
    path = pathlib.Path(path)
    known = frozenset(tags)
    sentences, words, labels = [], [], []
    for line_no, line in datafiles.lines(path):
        line = line.rstrip("\r\n")
        try:
            parsed = parse(line)
            if parsed is not _BOUNDARY and parsed is not _SKIP and parsed[1] not in known:
                raise _BadLine(f"unknown tag {parsed[1]!r} (known: {' '.join(tags)})")
        except _BadLine as e:
            raise datafiles.bad(path, line_no, f"{e}; line is {line[:80]!r}") from None
        if parsed is _SKIP:
            continue
        if parsed is _BOUNDARY:
            if words:
                sentences.append(Sentence(tuple(words), tuple(labels)))
                words, labels = [], []
            continue
        words.append(parsed[0])
        labels.append(parsed[1])
    if words:
        sentences.append(Sentence(tuple(words), tuple(labels)))
    if not sentences:
        raise datafiles.no_records(path, "tagged sentences")
    return sentences


def _parse_conll2003(line: str):
    fields = line.split()
    if not fields or fields[0] == "-DOCSTART-":  # a document separator is never a sentence
        return _BOUNDARY
    if len(fields) != 2:
        raise _BadLine(f"expected 'token TAG', got {len(fields)} column(s)")
    return fields[0], fields[1]


def _parse_wnut17(line: str):
    line = line.replace("\ufeff", "")  # upstream dev.conll has stray byte-order marks
    if not line.strip():
        return _BOUNDARY
    fields = line.split("\t")
    if len(fields) != 2 or not fields[0]:
        raise _BadLine(f"expected 'token<TAB>TAG', got {len(fields)} column(s)")
    return fields[0], fields[1]


def _parse_conllu(line: str):
    if not line.strip():
        return _BOUNDARY
    if line.startswith("#"):
        return _SKIP
    fields = line.split("\t")
    if len(fields) != 10:
        raise _BadLine(f"expected 10 tab-separated CoNLL-U columns, got {len(fields)}")
    token_id = fields[0]
    if "-" in token_id or "." in token_id:  # multiword token range / empty node: not a word
        return _SKIP
    if not token_id.isdigit():
        raise _BadLine(f"bad token ID {token_id!r}")
    return fields[1], fields[3]  # FORM, UPOS


def read_conll2003(path: str | pathlib.Path, tags: Sequence[str] = CONLL2003_TAGS):
    """`token TAG` lines, blank line between sentences, `-DOCSTART- O` lines skipped."""
    return _read_sentences(path, tags, _parse_conll2003)


def read_wnut17(path: str | pathlib.Path, tags: Sequence[str] = WNUT17_TAGS):
    """`token<TAB>TAG` lines, blank line between sentences; U+FEFF removed everywhere."""
    return _read_sentences(path, tags, _parse_wnut17)


def read_conllu(path: str | pathlib.Path, tags: Sequence[str] = UPOS_TAGS):
    """CoNLL-U (optionally .gz): FORM and UPOS of each word; multiword and empty nodes skipped."""
    return _read_sentences(path, tags, _parse_conllu)
