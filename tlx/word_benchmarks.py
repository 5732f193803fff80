r"""Intrinsic evaluation of word vectors: word similarity and word analogies (the library under
the `python -m tlx.word_eval` CLI and the `word_vectors` evaluator), reading
`$TLX_DATA_DIR/word_eval/`:
  wordsim353.tsv, simlex999.txt  `w1<TAB>w2<TAB>score` lines ('#' lines are comments): Spearman
                                 correlation of cosine similarity with the human scores
  questions-words.txt            the Google analogy set, `: section` lines then `a b c d`
                                 questions: 3CosAdd accuracy (argmax over the candidates of
                                 cos(x, b - a + c), unit vectors, a, b and c excluded)

Definitions follow gensim 4.4 (`KeyedVectors.evaluate_word_pairs` / `evaluate_word_analogies`
with case_insensitive=True), and a test holds the numbers equal to gensim's on GloVe 6B:
- words are compared lower-cased; a vector set with several case variants of a word uses the
  first (most frequent) one;
- similarity pairs with an out-of-vocabulary word are skipped (counted in `oov_pairs`);
- an analogy question counts only if all four words are among the `restrict` most frequent
  words (the first rows), which are also the candidate answers; accuracies are over those
  covered questions, `coverage` is covered / all questions. Sections named `gram*` are
  syntactic, the others semantic.
"""

import dataclasses
import math
import os
import pathlib

import numpy as np

from data_pipelines import datafiles
from tlx.wordvec import WordVectors

SIMILARITY_SETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
ANALOGY_FILE = "questions-words.txt"
# Questions scored per matmul: [chunk, restrict] float32 scores stay ~60 MB at 30k words.
_CHUNK = 512


def _lower_index(vectors: WordVectors, restrict: int | None) -> dict[str, int]:
    """lower-cased word -> row of its first case variant among the first `restrict` rows."""
    words = vectors.words if restrict is None else vectors.words[:restrict]
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w.lower(), i)
    return index


def _open_lines(path: pathlib.Path):
    if not path.is_file():
        raise FileNotFoundError(f"word evaluation file {path} does not exist")
    return datafiles.lines(path)


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """(w1, w2, score) of a `w1<TAB>w2<TAB>score` file; '#' and blank lines skipped."""
    path = pathlib.Path(path)
    pairs = []
    for line_no, line in _open_lines(path):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise datafiles.bad(path, line_no, f"expected 'w1<TAB>w2<TAB>score', got {line!r}")
        try:
            score = float(fields[2])
        except ValueError:
            raise datafiles.bad(path, line_no, f"score {fields[2]!r} is not a number") from None
        pairs.append((fields[0], fields[1], score))
    if not pairs:
        raise datafiles.no_records(path, "word pairs")
    return pairs


def similarity(
    vectors: WordVectors, path: str | os.PathLike, restrict: int | None = None
) -> dict[str, float]:
    """Spearman (and Pearson) of cosine vs human scores over the pairs both of whose words have
    vectors (among the first `restrict` rows if given); the others are counted in oov_pairs."""
    from scipy import stats

    pairs = read_pairs(path)
    index = _lower_index(vectors, restrict)
    gold, rows = [], []
    for w1, w2, score in pairs:
        i, j = index.get(w1.lower()), index.get(w2.lower())
        if i is not None and j is not None:
            gold.append(score)
            rows.append((i, j))
    if len(rows) < 2:
        raise ValueError(
            f"{path}: only {len(rows)} of {len(pairs)} pairs have both words in {vectors}; "
            "a correlation needs at least 2"
        )
    rows = np.array(rows)  # [P, 2]
    pair = vectors.vectors[rows].astype(np.float64)  # [P, 2, D]
    norms = np.linalg.norm(pair, axis=2)  # [P, 2]
    # Zero vectors get cosine 0, as in WordVectors.normalized().
    cosine = np.einsum("pd,pd->p", pair[:, 0], pair[:, 1]) / np.maximum(norms.prod(1), 1e-300)
    return {
        "spearman": float(stats.spearmanr(gold, cosine).statistic),
        "pearson": float(stats.pearsonr(gold, cosine).statistic),
        "pairs": len(rows),
        "oov_pairs": len(pairs) - len(rows),
    }


@dataclasses.dataclass
class _Section:
    name: str
    questions: int = 0
    covered: int = 0
    correct: int = 0

    @property
    def semantic(self) -> bool:
        return not self.name.startswith("gram")


def read_analogies(path: str | os.PathLike) -> list[tuple[str, list[tuple[str, ...]]]]:
    """[(section, [(a, b, c, d), ...]), ...] of a questions-words file."""
    path = pathlib.Path(path)
    sections: list[tuple[str, list[tuple[str, ...]]]] = []
    for line_no, line in _open_lines(path):
        if not line.strip():
            continue
        if line.startswith(":"):
            name = line[1:].strip()
            if not name:
                raise datafiles.bad(path, line_no, "section line without a name")
            sections.append((name, []))
            continue
        words = tuple(line.split())
        if len(words) != 4:
            raise datafiles.bad(path, line_no, f"expected 4 words 'a b c d', got {line!r}")
        if not sections:
            raise datafiles.bad(path, line_no, "question before the first ': section' line")
        sections[-1][1].append(words)
    if not any(qs for _, qs in sections):
        raise datafiles.no_records(path, "analogy questions")
    return sections


def _answer(unit: np.ndarray, group: np.ndarray, questions: np.ndarray) -> np.ndarray:
    """3CosAdd predictions: rows [Q] for question rows (a, b, c) [Q, 3] over unit [R, D], -1
    where no candidate is left.

    `group[r]` is the first row with word r's lower-cased form; a candidate is excluded if its
    group is that of a, b or c, which for a lower-case vocabulary is just a, b and c.
    """
    out = np.empty(len(questions), np.int64)
    for s in range(0, len(questions), _CHUNK):
        q = questions[s : s + _CHUNK]  # [C, 3]
        target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]  # [C, D]
        scores = target @ unit.T  # [C, R]
        np.put_along_axis(scores, q, -np.inf, axis=1)
        best = scores.argmax(axis=1)  # [C]
        # Another case variant of an input word can still win; mask whole groups for those.
        clash = (group[best][:, None] == q).any(axis=1)
        for k in np.flatnonzero(clash):
            scores[k, np.isin(group, q[k])] = -np.inf
            best[k] = scores[k].argmax()
        best[~np.isfinite(scores[np.arange(len(q)), best])] = -1
        out[s : s + len(q)] = best
    return out


def analogy(vectors: WordVectors, path: str | os.PathLike, restrict: int = 30000) -> dict:
    """3CosAdd accuracy over the questions covered by the `restrict` most frequent words.

    Returns semantic/syntactic/total accuracy (over covered questions; NaN where none is
    covered), coverage, the counts, and `sections`: {name: {accuracy, correct, covered,
    questions}}.
    """
    sections = read_analogies(path)
    top = vectors.restrict(restrict)
    index = _lower_index(top, None)
    group = np.array([index[w.lower()] for w in top.words], np.int64)  # [R]
    stats = [_Section(name) for name, _ in sections]
    ids, owner = [], []  # covered questions as rows [a, b, c, d], and their section
    for n, (_, questions) in enumerate(sections):
        stats[n].questions = len(questions)
        for question in questions:
            row = [index.get(w.lower()) for w in question]
            if None not in row:
                ids.append(row)
                owner.append(n)
    if ids:
        ids = np.array(ids, np.int64)  # [N, 4]
        # A case variant of d is the right answer too (gensim compares upper-cased words).
        predicted = _answer(top.normalized().vectors, group, ids[:, :3])  # [N]
        right = (predicted >= 0) & (group[predicted] == ids[:, 3])  # [N]
        for n, ok in zip(owner, right):
            stats[n].covered += 1
            stats[n].correct += int(ok)

    def total(sel):
        return tuple(sum(getattr(s, f) for s in sel) for f in ("correct", "covered", "questions"))

    def acc(correct: int, covered: int) -> float:
        return correct / covered if covered else math.nan

    sem = total([s for s in stats if s.semantic])
    syn = total([s for s in stats if not s.semantic])
    all_ = total(stats)
    return {
        "semantic_accuracy": acc(*sem[:2]),
        "syntactic_accuracy": acc(*syn[:2]),
        "total_accuracy": acc(*all_[:2]),
        "coverage": all_[1] / all_[2],
        "semantic_correct": sem[0],
        "semantic_covered": sem[1],
        "syntactic_correct": syn[0],
        "syntactic_covered": syn[1],
        "correct": all_[0],
        "covered": all_[1],
        "questions": all_[2],
        "restrict": len(top),
        "sections": {
            s.name: {
                "accuracy": acc(s.correct, s.covered),
                "correct": s.correct,
                "covered": s.covered,
                "questions": s.questions,
            }
            for s in stats
        },
    }


def _data_root(data_dir: str | os.PathLike | None) -> pathlib.Path:
    # data_pipelines.paths.data_dir has the same rule, but importing data_pipelines loads
    # TensorFlow (seconds) for no use here.
    if data_dir is None:
        data_dir = os.environ.get("TLX_DATA_DIR")
        if not data_dir:
            raise RuntimeError("TLX_DATA_DIR is not set: point it at the tlx data root")
    return pathlib.Path(data_dir).expanduser()


def evaluate(
    vectors: WordVectors, data_dir: str | os.PathLike | None = None, restrict: int = 30000
) -> dict[str, float]:
    """All intrinsic metrics as one flat dict (`wordsim353/spearman`, `analogy/coverage`, ...).

    data_dir is the tlx data root (default $TLX_DATA_DIR); the files are under its word_eval/.
    """
    root = _data_root(data_dir) / "word_eval"
    out: dict[str, float] = {}
    for name, file in SIMILARITY_SETS.items():
        for key, value in similarity(vectors, root / file).items():
            out[f"{name}/{key}"] = value
    for key, value in analogy(vectors, root / ANALOGY_FILE, restrict).items():
        if key != "sections":
            out[f"analogy/{key}"] = value
    return out
