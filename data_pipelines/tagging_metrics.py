"""Scoring tagging predictions: per-position predictions back to words, and the metrics.

A word truncated from the input counts as predicted `outside_id(labels)` ("O"; "X" for UPOS);
the metrics take one list of tag names per sentence and return fractions in [0, 1].
"""

from collections.abc import Sequence

import numpy as np
from seqeval import metrics as seqeval_metrics


def outside_id(labels: Sequence[str]) -> int:
    """The tag id a truncated (unpredicted) word gets: "O" for NER, "X" (other) for UPOS."""
    for name in ("O", "X"):
        if name in labels:
            return list(labels).index(name)
    raise ValueError(f"no 'O' or 'X' tag in {labels}")


def words_from_pieces(
    pred_ids, label_weights, word_labels, outside_id: int
) -> tuple[list[int], list[int]]:
    """Per-position predictions [L] -> (gold tag ids, predicted tag ids) of the sentence's words.

    The k-th position with label_weight 1 is word k's prediction; the words after the kept ones
    (truncated from the input) are predicted `outside_id`.
    """
    pred_ids, label_weights, word_labels = map(np.asarray, (pred_ids, label_weights, word_labels))
    if not pred_ids.shape == label_weights.shape == word_labels.shape:
        raise ValueError(
            f"shapes differ: pred_ids {pred_ids.shape}, label_weights {label_weights.shape}, "
            f"word_labels {word_labels.shape}"
        )
    gold = word_labels[word_labels >= 0]
    kept = pred_ids[label_weights > 0]
    if len(kept) > len(gold):
        raise ValueError(f"{len(kept)} first pieces but only {len(gold)} words")
    pred = np.concatenate([kept, np.full(len(gold) - len(kept), outside_id, kept.dtype)])
    return gold.tolist(), pred.tolist()


def _as_names(sentences) -> list[list[str]]:
    return [[t.decode() if isinstance(t, bytes) else str(t) for t in s] for s in sentences]


def _checked(targets, predictions) -> tuple[list[list[str]], list[list[str]]]:
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} target sentences but {len(predictions)} predicted")
    for i, (t, p) in enumerate(zip(targets, predictions)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted")
    return _as_names(targets), _as_names(predictions)


def _token_accuracy(targets: list[list[str]], predictions: list[list[str]]) -> float:
    total = sum(len(t) for t in targets)
    correct = sum(a == b for t, p in zip(targets, predictions) for a, b in zip(t, p))
    return correct / total if total else 0.0


def entity_metrics(targets, predictions) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, conlleval-compatible) and token accuracy, as
    fractions in [0, 1] (tables show them x 100, in percent).

    targets, predictions: one list of tag names per sentence.
    """
    targets, predictions = _checked(targets, predictions)
    scores = {
        name: float(fn(targets, predictions, zero_division=0))
        for name, fn in (
            ("precision", seqeval_metrics.precision_score),
            ("recall", seqeval_metrics.recall_score),
            ("f1", seqeval_metrics.f1_score),
        )
    }
    return scores | {"token_accuracy": _token_accuracy(targets, predictions)}


def tag_accuracy(targets, predictions) -> dict[str, float]:
    """Word-level tag accuracy, a fraction in [0, 1]; targets, predictions: one list of tag
    names per sentence."""
    return {"accuracy": _token_accuracy(*_checked(targets, predictions))}
