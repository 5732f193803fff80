"""Losses and metrics, one function per training signal.

An objective maps (model outputs, batch) -> (scalar loss, {name: (sum, count)}). Metrics are
sums with their counts so that logging windows and eval passes average them exactly. Every
batch carries `example_weight` (0 marks padding examples added to fill an eval batch).

Gradient accumulation (tlx.optim, `train.microbatches`) calls an objective on one microbatch of
the step's batch with `whole=` that batch. Each loss is a sum of terms sum_t / n_t, where n_t
(masked positions, NSP examples, tagged or predicted tokens) depends on the batch alone; with
`whole` every n_t is counted over the whole batch, so the microbatches' losses, their
gradients and their metrics' sums and counts all add up to the whole batch's. Per-step
quantities (a model's `penalty`, metrics counted once per step) are scaled by the microbatch's
share of the rows, so they add up to one step's.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

# (outputs, batch, whole=None) -> (loss, metrics); `whole`: see the module docstring.
Objective = Callable[..., tuple[jnp.ndarray, dict]]


def _xent_sums(logits, labels, weights):
    """(sum xent, sum correct, sum weights) over positions weighted by `weights`."""
    xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return (xent * weights).sum(), (correct * weights).sum(), weights.sum()


def _example_weight(batch) -> jnp.ndarray:
    return batch.get("example_weight", jnp.ones(batch["input_ids"].shape[0], jnp.float32))


def _total(count, whole: dict | None, count_of: Callable[[dict], jnp.ndarray]):
    """A loss term's denominator: this batch's `count`, or for a microbatch `count_of(whole)`."""
    return count if whole is None else count_of(whole)


def _share(batch: dict, whole: dict | None) -> float:
    """The fraction of the step's rows `batch` holds (1 unless it is a microbatch of `whole`)."""
    if whole is None:
        return 1.0
    return jax.tree.leaves(batch)[0].shape[0] / jax.tree.leaves(whole)[0].shape[0]


def _mlm_targets(batch: dict, grid: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(labels, weights): [B, P] at the predicted positions, or scattered onto [B, L] when the
    head scores every position (`grid`)."""
    ex_w = _example_weight(batch)  # [B]
    positions = batch["masked_lm_positions"]  # [B, P]
    weights = batch["masked_lm_weights"].astype(jnp.float32) * ex_w[:, None]
    labels = batch["masked_lm_ids"]
    if grid:
        b = jnp.arange(positions.shape[0])[:, None]
        shape = batch["input_ids"].shape
        labels = jnp.zeros(shape, jnp.int32).at[b, positions].set(labels)
        weights = jnp.zeros(shape, jnp.float32).at[b, positions].max(weights)
    return labels, weights


def mlm_nsp(outputs: dict, batch: dict, whole: dict | None = None):
    """BERT pretraining: masked-LM over the predicted positions + next-sentence prediction."""
    mlm_logits = outputs["mlm_logits"]  # [B, P, V], or [B, L, V] when scoring every position
    grid = mlm_logits.shape[1] != batch["masked_lm_positions"].shape[1]
    labels, weights = _mlm_targets(batch, grid)
    mlm_xent, mlm_correct, mlm_n = _xent_sums(mlm_logits, labels, weights)
    ex_w = _example_weight(batch)  # [B]
    nsp_xent, nsp_correct, nsp_n = _xent_sums(
        outputs["nsp_logits"], batch["next_sentence_labels"].reshape(-1), ex_w
    )
    mlm_total = _total(mlm_n, whole, lambda b: _mlm_targets(b, grid)[1].sum())
    nsp_total = _total(nsp_n, whole, lambda b: _example_weight(b).sum())
    mlm_loss = mlm_xent / jnp.maximum(mlm_total, 1e-8)
    nsp_loss = nsp_xent / jnp.maximum(nsp_total, 1e-8)
    loss = mlm_loss + nsp_loss
    return loss, {
        "loss": (loss, _share(batch, whole)),
        "mlm_loss": (mlm_xent, mlm_n),
        "mlm_accuracy": (mlm_correct, mlm_n),
        "nsp_loss": (nsp_xent, nsp_n),
        "nsp_accuracy": (nsp_correct, nsp_n),
    }


def _penalty(outputs: dict, batch: dict, whole: dict | None):
    # Per step: a microbatch carries its share, so the microbatches add it (and its gradient) once.
    return outputs.get("penalty", 0.0) * _share(batch, whole)


def classification(outputs: dict, batch: dict, whole: dict | None = None):
    """Cross-entropy of `logits` [B, C] against `label` [B]; accuracy alongside. A model's
    `penalty` output (e.g. ELMo's L2 on its mixing scalars) is added to the loss."""
    ex_w = _example_weight(batch)
    xent, correct, n = _xent_sums(outputs["logits"], batch["label"].reshape(-1), ex_w)
    total = _total(n, whole, lambda b: _example_weight(b).sum())
    loss = xent / jnp.maximum(total, 1e-8) + _penalty(outputs, batch, whole)
    return loss, {"loss": (xent, n), "accuracy": (correct, n)}


def _tag_weights(batch: dict) -> jnp.ndarray:
    return batch["label_weights"].astype(jnp.float32) * _example_weight(batch)[:, None]  # [B, L]


def tagging(outputs: dict, batch: dict, whole: dict | None = None):
    """Token cross-entropy of `logits` [B, L, C] against `labels` [B, L], counted only where
    `label_weights` is set (each word's first sub-word piece); token accuracy alongside."""
    xent, correct, n = _xent_sums(outputs["logits"], batch["labels"], _tag_weights(batch))
    total = _total(n, whole, lambda b: _tag_weights(b).sum())
    loss = xent / jnp.maximum(total, 1e-8) + _penalty(outputs, batch, whole)
    return loss, {"loss": (xent, n), "token_accuracy": (correct, n)}


# ---------------------------------------------------------------------------- causal LM
# Over a 50k vocabulary the tied output projection and its cross-entropy are most of a small
# GPT's step. `tied_xent` never materialises [B, L, V] logits: it scans over chunks of positions,
# and under differentiation computes each chunk's gradients in the same pass (softmax - onehot,
# then dh = dlogits E and dE += dlogits^T h), so the backward pass costs no recomputation.

XENT_CHUNK = 32  # positions per chunk: [B, 32, V] float32 logits live at a time


def _chunked(x, chunk: int):
    """[B, L, ...] -> [L / chunk, B, chunk, ...] (L padded with zeros to a multiple)."""
    pad = -x.shape[1] % chunk
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(x.shape[0], -1, chunk, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def _xent_scan(hidden, embedding, targets, weights, chunk: int, grads: bool):
    emb = embedding.astype(hidden.dtype)
    hs, ts, ws = (_chunked(a, chunk) for a in (hidden, targets, weights.astype(jnp.float32)))

    def step(d_emb, xs):
        h, t, w = xs  # [B, C, D], [B, C], [B, C]
        logits = jnp.einsum("bcd,vd->bcv", h, emb, preferred_element_type=jnp.float32)
        lse = jax.nn.logsumexp(logits, -1)  # [B, C]
        target_logit = jnp.take_along_axis(logits, t[..., None], -1)[..., 0]
        xent = ((lse - target_logit) * w).sum()
        correct = ((jnp.argmax(logits, -1) == t) * w).sum()
        if not grads:
            return d_emb, (xent, correct, None)
        d_logits = jnp.exp(logits - lse[..., None]) - jax.nn.one_hot(t, logits.shape[-1])
        d_logits = (d_logits * w[..., None]).astype(hidden.dtype)  # [B, C, V]
        d_h = jnp.einsum("bcv,vd->bcd", d_logits, emb, preferred_element_type=jnp.float32)
        d_emb = d_emb + jnp.einsum("bcv,bcd->vd", d_logits, h, preferred_element_type=jnp.float32)
        return d_emb, (xent, correct, d_h.astype(hidden.dtype))

    init = jnp.zeros(embedding.shape, jnp.float32) if grads else None
    d_emb, (xent, correct, d_h) = jax.lax.scan(step, init, (hs, ts, ws))
    if grads:
        d_h = jnp.moveaxis(d_h, 0, 1).reshape(hidden.shape[0], -1, hidden.shape[2])
        d_h = d_h[:, : hidden.shape[1]]
        d_emb = d_emb.astype(embedding.dtype)
    return xent.sum(), correct.sum(), d_h, d_emb


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def tied_xent(hidden, embedding, targets, weights, chunk: int = XENT_CHUNK):
    """Weighted sums (cross-entropy, correct) of logits = hidden [B, L, D] . embedding [V, D]^T
    against targets [B, L]; differentiable in hidden and embedding (not weights)."""
    xent, correct, _, _ = _xent_scan(hidden, embedding, targets, weights, chunk, grads=False)
    return xent, correct


def _tied_xent_fwd(hidden, embedding, targets, weights, chunk):
    xent, correct, d_h, d_emb = _xent_scan(hidden, embedding, targets, weights, chunk, True)
    return (xent, correct), (d_h, d_emb)


def _tied_xent_bwd(chunk, residuals, cotangents):
    d_h, d_emb = residuals
    g = cotangents[0]  # the correct-count output is not differentiable
    return (g * d_h).astype(d_h.dtype), (g * d_emb).astype(d_emb.dtype), None, None


tied_xent.defvjp(_tied_xent_fwd, _tied_xent_bwd)


def _documents(batch) -> jnp.ndarray:
    """[B, L] document of each position: document_ids (packed rows), else input_mask."""
    ids = batch["input_ids"]
    return batch.get("document_ids", batch.get("input_mask", jnp.ones_like(ids)))


def next_token_targets(batch: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(targets [B, L], weights [B, L]): position t predicts token t + 1 of the same document.

    Packed rows carry `document_ids` (0 = padding); otherwise `input_mask` marks one document.
    The last token of a document, padding and the row's last position predict nothing."""
    ids, doc = batch["input_ids"], _documents(batch)
    targets = jnp.pad(ids[:, 1:], ((0, 0), (0, 1)))
    same = (doc[:, 1:] == doc[:, :-1]) & (doc[:, 1:] > 0)
    weights = jnp.pad(same, ((0, 0), (0, 1))).astype(jnp.float32)
    return targets, weights * _example_weight(batch)[:, None]


def _lm_sums(outputs: dict, batch: dict, xent_chunk: int):
    targets, weights = next_token_targets(batch)
    h, emb = outputs["lm_hidden"], outputs["lm_embedding"]
    if xent_chunk:
        xent, correct = tied_xent(h, emb, targets, weights, xent_chunk)
        return xent, correct, weights.sum()
    logits = jnp.einsum("bld,vd->blv", h, emb.astype(h.dtype), preferred_element_type=jnp.float32)
    return _xent_sums(logits, targets, weights)


def _lm_total(n, whole: dict | None):
    return _total(n, whole, lambda b: next_token_targets(b)[1].sum())


def causal_lm(outputs: dict, batch: dict, xent_chunk: int = XENT_CHUNK, whole: dict | None = None):
    """L = -sum_t log p(y_t | y_<t), averaged over predicted tokens (perplexity = exp(lm_loss)).
    xent_chunk: positions per chunk of the fused loss; 0 materialises [B, L, V] logits."""
    xent, correct, n = _lm_sums(outputs, batch, xent_chunk)
    loss = xent / jnp.maximum(_lm_total(n, whole), 1e-8)
    return loss, {"loss": (xent, n), "lm_loss": (xent, n), "lm_accuracy": (correct, n)}


def with_lm_aux(task: Objective, lm_coef: float, xent_chunk: int = XENT_CHUNK) -> Objective:
    """GPT-1 finetuning: L = L_task + lm_coef * L_lm, the LM loss over the task's own inputs."""

    def objective(outputs: dict, batch: dict, whole: dict | None = None):
        loss, metrics = task(outputs, batch, whole=whole)
        xent, correct, n = _lm_sums(outputs, batch, xent_chunk)
        lm_loss = xent / jnp.maximum(_lm_total(n, whole), 1e-8)
        total = loss + lm_coef * lm_loss
        examples = _example_weight(batch).sum()  # so eval averages over examples, not batches
        # A microbatch's `total` is its part of the whole batch's loss: weight it by the whole's
        # examples, so the microbatches' sums and counts add up to the whole batch's pair.
        weight = _total(examples, whole, lambda b: _example_weight(b).sum())
        metrics = {**metrics, "task_loss": metrics["loss"], "loss": (total * weight, examples)}
        return total, {**metrics, "lm_loss": (xent, n), "lm_accuracy": (correct, n)}

    return objective


def _decoder_weights(batch: dict) -> jnp.ndarray:
    return batch["decoder_mask"].astype(jnp.float32) * _example_weight(batch)[:, None]  # [B, T]


def seq2seq(outputs: dict, batch: dict, whole: dict | None = None):
    """Translation (CoVe's MT-LSTM): -sum_t log p(y_t | y_<t, x) under teacher forcing, averaged
    over target tokens (EOS included); exp(loss) is the per-token perplexity."""
    weights = _decoder_weights(batch)
    xent, correct, n = _xent_sums(outputs["logits"], batch["decoder_target_ids"], weights)
    loss = xent / jnp.maximum(_total(n, whole, lambda b: _decoder_weights(b).sum()), 1e-8)
    # lm_loss: the decoder's conditional LM loss, so logs derive its perplexity as for LMs
    return loss, {"loss": (xent, n), "lm_loss": (xent, n), "token_accuracy": (correct, n)}


# ---------------------------------------------------------------------------- biLM (ELMo)
# Forward and backward LMs over one shared softmax; sampled softmax when the model drew
# `sampled_ids` (tlx.models.elmo, training only).


def log_uniform_log_prob(ids: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
    """log Q(k), Q(k) = log((k + 2) / (k + 1)) / log(V + 1): Zipf-like over frequency-sorted
    ids (TF's log_uniform_candidate_sampler)."""
    k = ids.astype(jnp.float32)
    return jnp.log(jnp.log1p(1.0 / (k + 1.0))) - math.log(math.log(vocab_size + 1.0))


def sampled_xent(hidden, embedding, bias, targets, weights, sampled_ids) -> jnp.ndarray:
    """Weighted sum over positions of the sampled-softmax cross-entropy (see the module
    docstring): hidden [B, L, P], embedding [V, P], bias [V], targets / weights [B, L],
    sampled_ids [K] -> []."""
    h = hidden.astype(jnp.float32)
    emb, b = embedding.astype(jnp.float32), bias.astype(jnp.float32)
    true_logit = jnp.einsum("blp,blp->bl", h, emb[targets]) + b[targets]  # [B, L]
    correction = math.log(sampled_ids.shape[0]) + log_uniform_log_prob(sampled_ids, b.shape[0])
    sample_logit = h @ emb[sampled_ids].T + (b[sampled_ids] - correction)  # [B, L, K]
    hit = sampled_ids[None, None, :] == targets[..., None]
    sample_logit = jnp.where(hit, -jnp.inf, sample_logit)
    lse = jnp.logaddexp(true_logit, jax.nn.logsumexp(sample_logit, -1))  # [B, L]
    return ((lse - true_logit) * weights).sum()


def previous_token_targets(batch: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(targets, weights) [B, L]: position t predicts token t - 1 of its document. A document's
    first token, padding and the row's first position predict nothing."""
    ids, doc = batch["input_ids"], _documents(batch)
    targets = jnp.pad(ids[:, :-1], ((0, 0), (1, 0)))
    same = (doc[:, :-1] == doc[:, 1:]) & (doc[:, :-1] > 0)
    weights = jnp.pad(same, ((0, 0), (1, 0))).astype(jnp.float32)
    return targets, weights * _example_weight(batch)[:, None]


def _full_sums(hidden, embedding, bias, targets, weights, xent_chunk: int):
    """(sum xent, sum correct) of logits hidden . embedding^T + bias, [B, L, V] unmaterialised:
    the bias rides along as an extra input feature fixed at 1."""
    if not xent_chunk:
        emb = embedding.astype(hidden.dtype)  # logits summed in float32 (tlx.precision)
        logits = jnp.einsum("blp,vp->blv", hidden, emb, preferred_element_type=jnp.float32) + bias
        xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
        correct = jnp.argmax(logits, -1) == targets
        return (xent * weights).sum(), (correct * weights).sum()
    ones = jnp.ones(hidden.shape[:-1] + (1,), hidden.dtype)
    h = jnp.concatenate([hidden, ones], -1)  # [B, L, P + 1]
    e = jnp.concatenate([embedding, bias[:, None].astype(embedding.dtype)], -1)  # [V, P + 1]
    return tied_xent(h, e, targets, weights, xent_chunk)


def _bilm_count(batch: dict) -> jnp.ndarray:
    return next_token_targets(batch)[1].sum() + previous_token_targets(batch)[1].sum()


def bilm(outputs: dict, batch: dict, xent_chunk: int = XENT_CHUNK, whole: dict | None = None):
    """Joint biLM loss: mean over predicted tokens of -log p(t_{k+1} | t_<=k) and, separately,
    of -log p(t_{k-1} | t_>=k), averaged (Peters et al. section 3.1). Both directions
    predict the same number of tokens (each document of n tokens gives n - 1 pairs either
    way), so that average equals the pooled mean and `loss` / `lm_loss` aggregate exactly.
    Sampled softmax when `outputs` holds `sampled_ids` (training), else the full softmax;
    accuracies only for the full softmax. xent_chunk = 0 materialises [B, L, V] logits."""
    emb, bias = outputs["softmax_embedding"], outputs["softmax_bias"]
    sums, metrics = {}, {}
    for name, hidden, (targets, weights) in (
        ("forward", outputs["forward_hidden"], next_token_targets(batch)),
        ("backward", outputs["backward_hidden"], previous_token_targets(batch)),
    ):
        n = weights.sum()
        if "sampled_ids" in outputs:
            xent = sampled_xent(hidden, emb, bias, targets, weights, outputs["sampled_ids"])
        else:
            xent, correct = _full_sums(hidden, emb, bias, targets, weights, xent_chunk)
            metrics[f"{name}_accuracy"] = (correct, n)
        sums[name] = (xent, n)
        metrics[f"{name}_loss"] = (xent, n)
    xent = sums["forward"][0] + sums["backward"][0]
    n = sums["forward"][1] + sums["backward"][1]
    loss = xent / jnp.maximum(_total(n, whole, _bilm_count), 1e-8)
    # lm_loss: logs derive perplexity = exp(mean of the two directions' xent) from it
    return loss, {"loss": (xent, n), "lm_loss": (xent, n), **metrics}


# ---------------------------------------------------------------------------- word embeddings
# Both are sums, not means: word2vec and GloVe are SGD/AdaGrad over single pairs or entries
# with a per-pair learning rate, and a batch applies those per-pair updates together.


def sgns(outputs: dict, batch: dict, whole: dict | None = None):
    """Skip-gram / CBOW negative sampling: -log s(u.v) per real pair, -log s(-u.n) per noise
    word (weighted by how many pairs share that draw)."""
    pos, pos_mask = outputs["pos_logits"], outputs["pos_mask"].astype(jnp.float32)
    neg, neg_w = outputs["neg_logits"], outputs["neg_weight"]
    pos_loss = (jax.nn.softplus(-pos) * pos_mask).sum()
    neg_loss = (jax.nn.softplus(neg) * neg_w[..., None]).sum()
    loss = pos_loss + neg_loss
    pairs = pos_mask.sum()
    return loss, {
        "loss": (loss, pairs),  # per training pair (its noise words included)
        "pos_loss": (pos_loss, pairs),
        "pos_accuracy": (((pos > 0) * pos_mask).sum(), pairs),
        "pairs_per_step": (pairs, _share(batch, whole)),
    }


def glove(outputs: dict, batch: dict, whole: dict | None = None):
    """GloVe's weighted least squares: 1/2 f(X_ij) (w_i.w~_j + b_i + b~_j - log X_ij)^2; the
    pipeline ships f(X_ij) as `weight` (0 for padding entries) and log X_ij as `log_count`."""
    diff = outputs["prediction"] - batch["log_count"]
    weight = batch["weight"]
    loss = 0.5 * (weight * diff**2).sum()
    n = (weight > 0).sum().astype(jnp.float32)
    return loss, {"loss": (loss, n), "entries_per_step": (n, _share(batch, whole))}


OBJECTIVES: dict[str, Objective] = {
    "mlm_nsp": mlm_nsp,
    "classification": classification,
    "tagging": tagging,
    "causal_lm": causal_lm,
    "seq2seq": seq2seq,
    "bilm": bilm,
    "sgns": sgns,
    "glove": glove,
}


def get(name: str, lm_coef: float = 0.0, xent_chunk: int = XENT_CHUNK) -> Objective:
    """The named objective; lm_coef > 0 adds GPT-1's auxiliary LM loss to a task objective;
    xent_chunk sets the LM losses' fused cross-entropy chunk (0: materialised logits)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    if xent_chunk < 0:
        raise ValueError(f"xent_chunk must be >= 0, got {xent_chunk}")
    if lm_coef:
        if name not in ("classification", "tagging"):
            raise ValueError(f"lm_coef applies to task objectives, not {name!r}")
        return with_lm_aux(OBJECTIVES[name], lm_coef, xent_chunk)
    if name in ("causal_lm", "bilm"):
        return functools.partial(OBJECTIVES[name], xent_chunk=xent_chunk)
    return OBJECTIVES[name]


# Objectives with a language-model loss: their metrics gain perplexity = exp(lm_loss).
_LM_LOSS = ("causal_lm", "bilm")


def from_config(section) -> Objective:
    """The objective a config's `objective` section names (name, lm_coef, xent_chunk). A run
    directory written before the section existed stores the bare name: accepted."""
    if isinstance(section, str):
        return get(section)
    return get(section["name"], section.get("lm_coef", 0.0), section.get("xent_chunk", XENT_CHUNK))


def derived_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics an objective derives from its averaged ones: perplexity of the window's (or
    split's) predicted tokens wherever an LM loss is reported (causal LM, biLM, GPT-1's aux)."""
    if "lm_loss" not in metrics:
        return metrics
    return {**metrics, "perplexity": math.exp(min(metrics["lm_loss"], 50.0))}


def name_of(section) -> str:
    return section if isinstance(section, str) else section["name"]
