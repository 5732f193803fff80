"""The pretraining corpus under $TLX_DATA_DIR/pretrain as documents of sentences.

Sources: `wikitext2` (raw test file, ` = Title = ` starts an article), `gutenberg` (one book per
document, paragraphs separated by blank lines), `inaugural` and `state_union` (JSONL {"id","text"}).
"""

import dataclasses
import hashlib
import json
import pathlib
import re
from collections.abc import Iterable, Iterator, Sequence

DEFAULT_SOURCES = ("wikitext2", "gutenberg", "inaugural", "state_union")
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Document:
    doc_id: str
    sentences: list[str]


class CorpusFormatError(ValueError):
    """Malformed corpus input; the message names the file and line."""


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
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
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
                raise CorpusFormatError(
                    f"{path}:{line_no}: text before the first ' = Title = ' line"
                )
            else:
                sentences.extend(split_sentences(line))
    if title is not None:
        yield Document(f"wikitext2/{title}", sentences)


def _read_gutenberg(directory: pathlib.Path) -> Iterator[Document]:
    files = sorted(p for p in directory.glob("*.txt") if p.name != "SOURCE.txt")
    if not files:
        raise FileNotFoundError(f"corpus source 'gutenberg': no *.txt files in {directory}")
    for path in files:
        text = path.read_text(encoding="utf-8")
        start, end = _PG_START.search(text), _PG_END.search(text)
        if start:
            text = text[start.end() :]
            end = _PG_END.search(text)
        if end:
            text = text[: end.start()]
        yield Document(f"gutenberg/{path.stem}", _paragraphs_to_sentences(text))


def _read_jsonl(path: pathlib.Path, name: str) -> Iterator[Document]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id, text = record["id"], record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorpusFormatError(f"{path}:{line_no}: bad JSONL record ({e})") from e
            if not isinstance(doc_id, str) or not isinstance(text, str):
                raise CorpusFormatError(f"{path}:{line_no}: 'id' and 'text' must be strings")
            yield Document(f"{name}/{doc_id}", _paragraphs_to_sentences(text))


def _read_tfds(spec: str) -> Iterator[Document]:
    """`tfds:NAME[:SPLIT]`, e.g. `tfds:wikipedia/20230601.en:train[:100000]` (needs the network
    or a prepared TFDS dir). Documents are held in memory, so bound big datasets with SPLIT."""
    import tensorflow_datasets as tfds

    name, _, split = spec.removeprefix("tfds:").partition(":")
    for index, ex in enumerate(tfds.as_numpy(tfds.load(name, split=split or "train"))):
        text = ex["text"].decode("utf-8")
        title = ex.get("title", str(index).encode()).decode("utf-8")
        yield Document(f"{name}/{title}", _paragraphs_to_sentences(text.replace("\n", "\n\n")))


def read_source(root: pathlib.Path, name: str) -> list[Document]:
    if name.startswith("tfds:"):
        return [d for d in _read_tfds(name) if d.sentences]
    directory = _source_dir(root, name)
    if name == "wikitext2":
        docs = _read_wikitext(directory / "wiki.test.raw.txt")
    elif name == "gutenberg":
        docs = _read_gutenberg(directory)
    elif name in ("inaugural", "state_union"):
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
