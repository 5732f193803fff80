"""Losses and metrics, one function per training signal.

An objective maps (model outputs, batch) -> (scalar loss, {name: (sum, count)}). Metrics are
sums with their counts so that logging windows and eval passes average them exactly. Every
batch carries `example_weight` (0 marks padding examples added to fill an eval batch).
"""

from collections.abc import Callable

import jax.numpy as jnp
import optax

Objective = Callable[[dict, dict], tuple[jnp.ndarray, dict]]


def _xent_sums(logits, labels, weights):
    """(sum xent, sum correct, sum weights) over positions weighted by `weights`."""
    xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return (xent * weights).sum(), (correct * weights).sum(), weights.sum()


def _example_weight(batch) -> jnp.ndarray:
    return batch.get("example_weight", jnp.ones(batch["input_ids"].shape[0], jnp.float32))


def mlm_nsp(outputs: dict, batch: dict):
    """BERT pretraining: masked-LM over the predicted positions + next-sentence prediction."""
    ex_w = _example_weight(batch)  # [B]
    mlm_logits = outputs["mlm_logits"]  # [B, P, V], or [B, L, V] when scoring every position
    positions = batch["masked_lm_positions"]  # [B, P]
    weights = batch["masked_lm_weights"].astype(jnp.float32) * ex_w[:, None]
    labels = batch["masked_lm_ids"]
    if mlm_logits.shape[1] != positions.shape[1]:  # all-positions variant: targets on [B, L]
        b = jnp.arange(positions.shape[0])[:, None]
        grid = batch["input_ids"].shape
        labels = jnp.zeros(grid, jnp.int32).at[b, positions].set(labels)
        weights = jnp.zeros(grid, jnp.float32).at[b, positions].max(weights)
    mlm_xent, mlm_correct, mlm_n = _xent_sums(mlm_logits, labels, weights)
    nsp_xent, nsp_correct, nsp_n = _xent_sums(
        outputs["nsp_logits"], batch["next_sentence_labels"].reshape(-1), ex_w
    )
    mlm_loss = mlm_xent / jnp.maximum(mlm_n, 1e-8)
    nsp_loss = nsp_xent / jnp.maximum(nsp_n, 1e-8)
    loss = mlm_loss + nsp_loss
    return loss, {
        "loss": (loss, 1.0),
        "mlm_loss": (mlm_xent, mlm_n),
        "mlm_accuracy": (mlm_correct, mlm_n),
        "nsp_loss": (nsp_xent, nsp_n),
        "nsp_accuracy": (nsp_correct, nsp_n),
    }


def classification(outputs: dict, batch: dict):
    """Cross-entropy of `logits` [B, C] against `label` [B]; accuracy alongside."""
    ex_w = _example_weight(batch)
    xent, correct, n = _xent_sums(outputs["logits"], batch["label"].reshape(-1), ex_w)
    loss = xent / jnp.maximum(n, 1e-8)
    return loss, {"loss": (xent, n), "accuracy": (correct, n)}


def tagging(outputs: dict, batch: dict):
    """Token cross-entropy of `logits` [B, L, C] against `labels` [B, L], counted only where
    `label_weights` is set (each word's first sub-word piece); token accuracy alongside."""
    weights = batch["label_weights"].astype(jnp.float32) * _example_weight(batch)[:, None]
    xent, correct, n = _xent_sums(outputs["logits"], batch["labels"], weights)
    loss = xent / jnp.maximum(n, 1e-8)
    return loss, {"loss": (xent, n), "token_accuracy": (correct, n)}


OBJECTIVES: dict[str, Objective] = {
    "mlm_nsp": mlm_nsp,
    "classification": classification,
    "tagging": tagging,
}


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]
