"""tlx.word_eval: similarity and 3CosAdd analogies on hand-built vectors, file errors, the CLI,
and agreement with gensim 4.4 on GloVe 6B 50d."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tlx import word_benchmarks, wordvec
from tlx.wordvec import WordVectors

E = np.eye(5, dtype=np.float32)
# Each row gets normalized by the evaluation; the comments give the 3CosAdd geometry.
FAMILY = {
    "man": E[0],
    "woman": E[1],
    "king": E[0] + E[2],
    "queen": E[1] + E[2],
    "boy": E[0] + 0.3 * E[3],
    # Far from woman: for "man woman boy ?" the target (-0.04, 1, 0, 0.29) has cosine 0.96 with
    # woman (an input) but 0.87 with girl, so girl wins only because inputs are excluded.
    "girl": E[1] + E[3],
}
LADY = E[1] + 0.2 * E[3]  # cosine 0.995 with that target: a distractor that beats girl
APPLE = E[4]  # the least frequent word: outside restrict=len-1

QUESTIONS = """\
: family
man woman king queen
man woman boy girl
man woman prince princess
: gram-gender
king queen man woman
KING Queen Man WOMAN
apple woman king queen
"""


def vectors(**extra) -> WordVectors:
    table = {**FAMILY, **extra, "apple": APPLE}
    return WordVectors(list(table), np.stack(list(table.values())))


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "questions-words.txt"
    path.write_text(QUESTIONS)
    return path


def test_analogy_known_answers(questions):
    wv = vectors()
    r = word_benchmarks.analogy(wv, questions, restrict=len(wv) - 1)
    # Covered: 2 of 3 family questions (prince is OOV), 2 of 3 gram ones (apple is beyond
    # restrict); all four covered ones are right, the upper-case one matching lower-case words.
    assert (r["semantic_correct"], r["semantic_covered"]) == (2, 2)
    assert (r["syntactic_correct"], r["syntactic_covered"]) == (2, 2)
    assert (r["correct"], r["covered"], r["questions"]) == (4, 4, 6)
    assert r["total_accuracy"] == r["semantic_accuracy"] == r["syntactic_accuracy"] == 1.0
    assert r["coverage"] == pytest.approx(4 / 6)
    assert r["sections"]["family"] == {"accuracy": 1.0, "correct": 2, "covered": 2, "questions": 3}
    # With apple among the candidates the last question is covered, and right: the target
    # (0.71, 1, 0.71, 0, -1) has cosine 0.70 with queen, 0.41 at most with the other candidates.
    r = word_benchmarks.analogy(wv, questions, restrict=len(wv))
    assert (r["syntactic_correct"], r["syntactic_covered"], r["coverage"]) == (3, 3, 5 / 6)


def test_analogy_distractor_wins(questions):
    wv = vectors(lady=LADY)
    r = word_benchmarks.analogy(wv, questions, restrict=len(wv) - 1)
    assert (r["semantic_correct"], r["semantic_covered"]) == (1, 2)  # lady beats girl
    assert r["semantic_accuracy"] == 0.5 and r["total_accuracy"] == 0.75
    assert r["syntactic_accuracy"] == 1.0  # lady (0.91) stays below woman (0.92) there


def test_analogy_case_variants_count_as_one_word(questions):
    # "Woman" (a later case variant) beats girl for "man woman boy ?" but is woman itself, so
    # it is excluded like woman; for "king queen man ?" it is the best candidate and counts as
    # the right answer woman. gensim treats case variants the same way.
    wv = vectors(Woman=E[1] + 0.01 * E[0])
    r = word_benchmarks.analogy(wv, questions, restrict=len(wv) - 1)
    assert (r["correct"], r["covered"]) == (4, 4)


@pytest.mark.parametrize("extra", [{}, {"lady": LADY}, {"Woman": E[1] + 0.01 * E[0]}])
def test_analogy_toy_matches_gensim(questions, extra):
    from gensim.models import KeyedVectors

    wv = vectors(**extra)
    kv = KeyedVectors(wv.dim)
    kv.add_vectors(wv.words, wv.vectors)
    _, sections = kv.evaluate_word_analogies(questions, restrict_vocab=len(wv) - 1)
    ours = word_benchmarks.analogy(wv, questions, restrict=len(wv) - 1)
    for s in sections[:-1]:
        mine = ours["sections"][s["section"]]
        assert (mine["correct"], mine["covered"]) == (
            len(s["correct"]),
            len(s["correct"]) + len(s["incorrect"]),
        )


def test_analogy_no_candidate_left(tmp_path):
    # Three words, all inputs: nothing to answer with, so even "a b c a" is wrong.
    (tmp_path / "q.txt").write_text(": s\na b c a\n")
    wv = WordVectors(["a", "b", "c"], np.eye(3))
    r = word_benchmarks.analogy(wv, tmp_path / "q.txt")
    assert (r["correct"], r["covered"]) == (0, 1)
    assert math.isnan(r["syntactic_accuracy"]) and r["semantic_accuracy"] == 0.0


def test_similarity_spearman(tmp_path):
    # cat at 0 degrees; dog, fox, car, sky at 10, 20, 40, 80: cosine order dog > fox > car > sky.
    angles = {"cat": 0, "dog": 10, "fox": 20, "car": 40, "sky": 80}
    rad = np.deg2rad(list(angles.values()))
    wv = WordVectors(list(angles), np.stack([np.cos(rad), np.sin(rad)], 1))
    path = tmp_path / "pairs.txt"
    path.write_text(
        "# a comment\n# w1\tw2\tscore\nCAT\tDog\t9\ncat\tfox\t7\ncat\tcar\t8\n"
        "cat\tsky\t1\ncat\tunicorn\t5\n"
    )
    r = word_benchmarks.similarity(wv, path)
    # Human ranks dog car fox sky vs cosine ranks dog fox car sky: d^2 sums to 2, so
    # rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert r["spearman"] == pytest.approx(0.8)
    assert (r["pairs"], r["oov_pairs"]) == (4, 1)
    # Restricted to the first 4 words, sky is out of vocabulary too: ranks 1 3 2 -> rho 0.5.
    r = word_benchmarks.similarity(wv, path, restrict=4)
    assert (r["spearman"], r["pairs"], r["oov_pairs"]) == (pytest.approx(0.5), 3, 2)


@pytest.mark.parametrize(
    "content, message",
    [
        ("# c\na\tb\n", r"pairs.txt:2: expected 'w1<TAB>w2<TAB>score'"),
        ("a\tb\t1\na b 2\n", r"pairs.txt:2: expected"),
        ("a\tb\t1\n\tb\t2\n", r"pairs.txt:2: expected"),
        ("a\tb\tten\n", r"pairs.txt:1: score 'ten' is not a number"),
        ("# only comments\n", r"pairs.txt: no word pairs"),
        ("a\tb\t1\nc\tzz\t2\n", r"pairs.txt: only 1 of 2 pairs have both words"),
    ],
)
def test_similarity_file_errors(tmp_path, content, message):
    (tmp_path / "pairs.txt").write_text(content)
    wv = WordVectors(["a", "b", "c"], np.eye(3))
    with pytest.raises(ValueError, match=message):
        word_benchmarks.similarity(wv, tmp_path / "pairs.txt")


@pytest.mark.parametrize(
    "content, message",
    [
        (": s\na b c\n", r"q.txt:2: expected 4 words"),
        ("a b c d\n", r"q.txt:1: question before the first ': section' line"),
        (": s\na b c d\n:\n", r"q.txt:3: section line without a name"),
        (": s\n", r"q.txt: no analogy questions"),
    ],
)
def test_analogy_file_errors(tmp_path, content, message):
    (tmp_path / "q.txt").write_text(content)
    wv = WordVectors(["a", "b", "c", "d"], np.eye(4))
    with pytest.raises(ValueError, match=message):
        word_benchmarks.analogy(wv, tmp_path / "q.txt")


def toy_data_root(tmp_path, pairs="man\twoman\t5\nking\tqueen\t6\nman\tboy\t7\n"):
    root = tmp_path / "data"
    (root / "word_eval").mkdir(parents=True)
    (root / "word_eval" / "questions-words.txt").write_text(QUESTIONS)
    for file in word_benchmarks.SIMILARITY_SETS.values():
        (root / "word_eval" / file).write_text(pairs)
    return root


def test_evaluate_flat_metrics_and_missing_files(tmp_path):
    root = toy_data_root(tmp_path)
    metrics = word_benchmarks.evaluate(vectors(), root, restrict=6)
    assert metrics["analogy/total_accuracy"] == 1.0
    assert metrics["analogy/coverage"] == pytest.approx(4 / 6)
    assert (metrics["wordsim353/pairs"], metrics["simlex999/oov_pairs"]) == (3, 0)
    assert set(metrics) >= {
        "wordsim353/spearman",
        "simlex999/spearman",
        "analogy/semantic_accuracy",
        "analogy/syntactic_accuracy",
    }
    assert all(isinstance(v, int | float) for v in metrics.values())
    (root / "word_eval" / "simlex999.txt").unlink()
    with pytest.raises(FileNotFoundError, match="word_eval/simlex999.txt does not exist"):
        word_benchmarks.evaluate(vectors(), root)


def test_cli_writes_json(tmp_path):
    root = toy_data_root(tmp_path)
    wordvec.save(vectors(), tmp_path / "v.bin", "word2vec_binary")
    out = tmp_path / "new_dir" / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tlx.word_eval", f"--vectors={tmp_path / 'v.bin'}"]
        + [f"--out={out}", f"--data_dir={root}", "--restrict=6"],
        capture_output=True,
        text=True,
        env={**os.environ, "TLX_DATA_DIR": "/nonexistent"},  # --data_dir must win
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "analogy/total_accuracy" in proc.stdout
    result = json.loads(out.read_text())
    assert result["metrics"]["analogy/covered"] == 4
    assert result["metrics"]["wordsim353/spearman"] == pytest.approx(
        word_benchmarks.evaluate(vectors(), root, restrict=6)["wordsim353/spearman"]
    )


# -------------------------------------------------------------------- GloVe 6B against gensim


@pytest.fixture(scope="module")
def glove_kv():
    from gensim.models import KeyedVectors

    g = wordvec.glove6b()
    kv = KeyedVectors(g.dim)
    kv.add_vectors(g.words, g.vectors)
    return kv


@pytest.mark.parametrize("name", word_benchmarks.SIMILARITY_SETS)
def test_glove6b_similarity_matches_gensim(data_dir, glove_kv, name):
    path = data_dir / "word_eval" / word_benchmarks.SIMILARITY_SETS[name]
    ours = word_benchmarks.similarity(wordvec.glove6b(), path)
    # gensim's default restrict_vocab is 300,000; ours is the whole vocabulary.
    pearson, spearman, oov_percent = glove_kv.evaluate_word_pairs(path, restrict_vocab=400_000)
    assert ours["spearman"] == pytest.approx(spearman.statistic, abs=1e-9)
    # gensim's cosines are float32 sums, ours float64: Pearson agrees to float32 precision.
    assert ours["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)
    assert ours["oov_pairs"] / (ours["pairs"] + ours["oov_pairs"]) * 100 == oov_percent


def test_glove6b_analogy_matches_gensim(data_dir, glove_kv, tmp_path):
    # gensim takes ~16 s for all 19,544 questions, so it answers every 40th question of each
    # section here; the full-file numbers below are gensim's from a one-off run.
    full = data_dir / "word_eval" / "questions-words.txt"
    subset = tmp_path / "subset.txt"
    lines, n = [], 0
    for line in full.read_text().splitlines():
        if line.startswith(":"):
            lines.append(line)
        else:
            n += 1
            if n % 40 == 0:
                lines.append(line)
    subset.write_text("\n".join(lines) + "\n")
    _, sections = glove_kv.evaluate_word_analogies(subset, restrict_vocab=30_000)
    ours = word_benchmarks.analogy(wordvec.glove6b(), subset, restrict=30_000)
    assert len(sections) == 15  # 14 sections + gensim's total
    for s in sections[:-1]:
        mine = ours["sections"][s["section"]]
        theirs = (len(s["correct"]), len(s["correct"]) + len(s["incorrect"]))
        assert (mine["correct"], mine["covered"]) == theirs, s["section"]

    r = word_benchmarks.analogy(wordvec.glove6b(), full, restrict=30_000)
    # gensim 4.4.0 evaluate_word_analogies(restrict_vocab=30000, case_insensitive=True) on the
    # full file: 7393 right of 14877 answered (0.4969...), semantic 3053/6002, syntactic
    # 4340/8875; it skips the other 4667 questions as out of the restricted vocabulary.
    assert (r["correct"], r["covered"], r["questions"]) == (7393, 14877, 19544)
    assert (r["semantic_correct"], r["semantic_covered"]) == (3053, 6002)
    assert (r["syntactic_correct"], r["syntactic_covered"]) == (4340, 8875)
    assert r["total_accuracy"] == pytest.approx(0.4969415876856893)
    assert r["coverage"] == pytest.approx(14877 / 19544)
