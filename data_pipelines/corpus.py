"""The pretraining corpus under $TLX_DATA_DIR/pretrain as documents of sentences.

Sources: `wikitext2` (raw test file, ` = Title = ` starts an article), `gutenberg` (one book per
document, paragraphs separated by blank lines), `inaugural` and `state_union` (JSONL {"id","text"}).
"""

import dataclasses
import hashlib
import pathlib
import re
from collections.abc import Iterable, Iterator, Sequence

from data_pipelines import datafiles

DEFAULT_SOURCES = ("wikitext2", "gutenberg", "inaugural", "state_union")
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Document:
    doc_id: str
    sentences: list[str]


# Malformed corpus input (a DataError); the message names the file and line.
CorpusFormatError = datafiles.FormatError


# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) when the next token
# starts with a capital letter or an opening quote. The look-behinds exclude common abbreviations
# and initials so "Mr. Darcy" stays one sentence; `re` needs fixed-width look-behinds, hence one
# per abbreviation.
_ABBREVIATIONS = ("Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "vs", "No", "Gen", "Col", "Capt")
_NOT_ABBREV = "".join(rf"(?<!\b{a}\.)" for a in _ABBREVIATIONS)
_SENTENCE_END = re.compile(
    rf"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]])){_NOT_ABBREV}(?<!\b[A-Z]\.)\s+(?=[\"'“‘(\[]?[A-Z])"
)
# Gutenberg files may keep the Project Gutenberg licence; the body lies between these markers.
_PG_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.M)
_PG_END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG.*$", re.M)
_WIKI_TITLE = re.compile(r"^ = ([^=].*) = $")
_WIKI_HEADING = re.compile(r"^ (= )+.*( =)+ $")


def split_sentences(text: str) -> list[str]:
    """Splits running text into sentences; whitespace is collapsed."""
    text = " ".join(text.split())
    if not text:
        return []
    return [s for s in _SENTENCE_END.split(text) if s and not s.isspace()]


def _paragraphs_to_sentences(text: str) -> list[str]:
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        sentences.extend(split_sentences(paragraph))
    return sentences


def _source_dir(root: pathlib.Path, name: str) -> pathlib.Path:
    path = root / "pretrain" / name
    if not path.is_dir():
        raise FileNotFoundError(f"corpus source {name!r}: directory {path} is missing")
    return path


def _read_wikitext(path: pathlib.Path) -> Iterator[Document]:
    title, sentences = None, []
    for line_no, line in datafiles.lines(path):
        line = line.rstrip("\n")
        match = _WIKI_TITLE.match(line)
        if match:
            if title is not None:
                yield Document(f"wikitext2/{title}", sentences)
            title, sentences = match.group(1).strip(), []
        elif _WIKI_HEADING.match(line) or not line.strip():
            # Section headings are not sentences and do not start a new article.
            continue
        elif title is None:
            raise CorpusFormatError(f"{path}:{line_no}: text before the first ' = Title = ' line")
        else:
            sentences.extend(split_sentences(line))
    if title is None:
        raise CorpusFormatError(f"{path}: no ' = Title = ' line, so no article in the file")
    yield Document(f"wikitext2/{title}", sentences)


def _gutenberg_files(directory: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(p for p in directory.glob("*.txt") if p.name != "SOURCE.txt")
    if not files:
        raise FileNotFoundError(f"corpus source 'gutenberg': no *.txt files in {directory}")
    return files


def _read_gutenberg(directory: pathlib.Path) -> Iterator[Document]:
    files = _gutenberg_files(directory)
    for path in files:
        text = datafiles.read_text(path)
        start, end = _PG_START.search(text), _PG_END.search(text)
        if start:
            text = text[start.end() :]
            end = _PG_END.search(text)
        if end:
            text = text[: end.start()]
        sentences = _paragraphs_to_sentences(text)
        if not sentences:
            raise CorpusFormatError(f"{path}: no sentences in the book's text (only whitespace?)")
        yield Document(f"gutenberg/{path.stem}", sentences)


def _read_jsonl(path: pathlib.Path, name: str) -> Iterator[Document]:
    records = 0
    for line_no, record, line in datafiles.json_records(path, "an object with 'id' and 'text'"):
        if not isinstance(record, dict) or "id" not in record or "text" not in record:
            raise CorpusFormatError(
                f"{path}:{line_no}: bad JSONL record (expected an object with 'id' and 'text', "
                f"got {line.strip()[:80]!r})"
            )
        doc_id, text = record["id"], record["text"]
        if not isinstance(doc_id, str) or not isinstance(text, str):
            raise CorpusFormatError(f"{path}:{line_no}: 'id' and 'text' must be strings")
        records += 1
        yield Document(f"{name}/{doc_id}", _paragraphs_to_sentences(text))
    if not records:
        raise datafiles.no_records(path, "JSONL records")


def _read_tfds(spec: str) -> Iterator[Document]:
    """`tfds:NAME[:SPLIT]`, e.g. `tfds:wikipedia/20230601.en:train[:100000]` (needs the network
    or a prepared TFDS dir). Documents are held in memory, so bound big datasets with SPLIT."""
    import tensorflow_datasets as tfds

    name, _, split = spec.removeprefix("tfds:").partition(":")
    for index, ex in enumerate(tfds.as_numpy(tfds.load(name, split=split or "train"))):
        text = ex["text"].decode("utf-8")
        title = ex.get("title", str(index).encode()).decode("utf-8")
        yield Document(f"{name}/{title}", _paragraphs_to_sentences(text.replace("\n", "\n\n")))


_JSONL_SOURCES = ("inaugural", "state_union")


def source_files(root: pathlib.Path, name: str) -> list[pathlib.Path]:
    """The files `read_source(root, name)` reads ([] for a TFDS source)."""
    if name.startswith("tfds:"):
        return []
    directory = _source_dir(root, name)
    if name == "wikitext2":
        return [directory / "wiki.test.raw.txt"]
    if name == "gutenberg":
        return _gutenberg_files(directory)
    if name in _JSONL_SOURCES:
        return [directory / f"{name}.jsonl"]
    raise ValueError(f"unknown corpus source {name!r}; known: {DEFAULT_SOURCES}")


def read_source(root: pathlib.Path, name: str) -> list[Document]:
    if name.startswith("tfds:"):
        return [d for d in _read_tfds(name) if d.sentences]
    directory = _source_dir(root, name)
    if name == "wikitext2":
        docs = _read_wikitext(directory / "wiki.test.raw.txt")
    elif name == "gutenberg":
        docs = _read_gutenberg(directory)
    elif name in _JSONL_SOURCES:
        docs = _read_jsonl(directory / f"{name}.jsonl", name)
    else:
        raise ValueError(f"unknown corpus source {name!r}; known: {DEFAULT_SOURCES}")
    return [d for d in docs if d.sentences]


def read_documents(
    data_dir: str | pathlib.Path, sources: Sequence[str] = DEFAULT_SOURCES
) -> list[Document]:
    """All non-empty documents of `sources`, in source order then file order."""
    root = pathlib.Path(data_dir)
    return [doc for name in sources for doc in read_source(root, name)]


def is_validation(doc_id: str, eval_fraction: float) -> bool:
    # A hash of the id, not the position, so adding a source does not move other documents.
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def split_documents(
    docs: Iterable[Document], split: str, eval_fraction: float = 0.05
) -> list[Document]:
    """The documents of `split` ("train" or "validation"), held out by document id."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    want_validation = split == "validation"
    return [d for d in docs if is_validation(d.doc_id, eval_fraction) == want_validation]
