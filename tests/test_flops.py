"""tlx.flops: each family's formula against XLA's own count of the training gradient, and the
peak table.

XLA's `cost_analysis()["flops"]` counts every op: the matrix products the formulas count and
also LayerNorm, GELU, softmax, dropout and the loss, which they leave out (MFU counts model
FLOPs). So XLA's count must be at least the formula's and at most a few percent above it; the
shapes are small but wide enough (hidden 128+, seq 16-64) that matrix products dominate.
A `lax.scan` body is counted once, not per step, so the LSTMs are unrolled in full here and the
LM losses materialise their logits (xent_chunk 0) instead of scanning over chunks.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.bert import finetune as bert_finetune
from configs.bert import pretrain as bert_pretrain
from configs.cove import translate
from configs.elmo import pretrain as elmo_pretrain
from configs.embeddings import glove, word2vec
from configs.gpt import finetune as gpt_finetune
from configs.gpt import pretrain as gpt_pretrain
from tlx import flops, models, objectives

_cfg = __import__("sys").modules["tlx_tests_conftest"].config_with
B = 4
I32, F32 = jnp.int32, jnp.float32
_KEY = jax.random.PRNGKey(0)


def _xla_flops(cfg, shapes: dict, gathered_rows: bool = False) -> float:
    """XLA's FLOPs of d(loss)/d(params) for one batch of `shapes` ({key: (shape, dtype)});
    `gathered_rows`: d(loss)/d(the rows the batch reads), as tlx.sparse's step takes it."""
    model = models.build(cfg.model)
    objective = objectives.from_config(cfg.objective)
    batch = {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()}
    batch["example_weight"] = jax.ShapeDtypeStruct((B,), F32)
    params = jax.eval_shape(lambda r, b: nn.unbox(model.init(r, b)["params"]), _KEY, batch)

    def loss(params, batch, rng):
        variables = {"params": params}
        if gathered_rows:
            idx = model.apply(variables, batch, method=model.lookups)
            rows = {n: params[n][i] for n, i in idx.items()}
            rows_loss = lambda r: objective(model.apply(variables, batch, rows=r)[0], batch)[0]
            return jax.grad(rows_loss)(rows)
        outputs, _ = model.apply(variables, batch, train=True, rngs={"dropout": rng})
        return objective(outputs, batch)[0]

    fn = loss if gathered_rows else jax.grad(loss)
    return float(jax.jit(fn).lower(params, batch, _KEY).cost_analysis()["flops"])


def _text(t, p=0, labels=None):
    out = {k: ((B, t), I32) for k in ("input_ids", "input_mask", "segment_ids")}
    if p:
        out.update(
            masked_lm_positions=((B, p), I32), masked_lm_ids=((B, p), I32),
            masked_lm_weights=((B, p), F32), next_sentence_labels=((B,), I32),
        )  # fmt: skip
    if labels == "sentence":
        out["label"] = ((B,), I32)
    elif labels == "tagging":
        out.update(labels=((B, t), I32), label_weights=((B, t), F32))
    return out


def _packed(t, chars=0):
    out = {k: ((B, t), I32) for k in ("input_ids", "document_ids", "positions")}
    if chars:
        out["char_ids"] = ((B, t, chars), I32)
    return out


def _case(name):
    """(config, batch shapes) of one family at a small width."""
    if name == "bert_pretrain":
        cfg = _cfg(bert_pretrain, "size=tiny,runlocal", **{"model.vocab_size": 2000})
        return cfg, _text(64, p=10)
    if name == "bert_mlm_all":
        over = {"model.vocab_size": 2000, "model.mlm_all_positions": True}
        cfg = _cfg(bert_pretrain, "size=tiny,runlocal", **over)
        return cfg, _text(32, p=32)
    if name == "gpt_lm":
        cfg = _cfg(gpt_pretrain, "size=tiny,runlocal", **{"model.vocab_size": 2000})
        return cfg, _packed(64)
    if name in ("bert_classifier", "gpt_classifier", "bert_tagger", "gpt_tagger"):
        family = bert_finetune if name.startswith("bert") else gpt_finetune
        task = "sst2" if name.endswith("classifier") else "conll2003_ner"
        cfg = _cfg(family, f"task={task},size=tiny,runlocal",
                   **{"model.vocab_size": 2000, "model.num_classes": 5})  # fmt: skip
        if name == "gpt_classifier":
            cfg.objective.lm_coef, cfg.objective.xent_chunk = 0.5, 0
        if name == "bert_tagger":
            cfg.model.head_hidden = 64
        kind = "sentence" if name.endswith("classifier") else "tagging"
        return cfg, _text(64, labels=kind)
    if name == "elmo_lm":
        cfg = _cfg(elmo_pretrain, "size=small", **{"model.vocab_size": 2000, "model.unroll": 16,
                                                   "objective.xent_chunk": 0})  # fmt: skip
        return cfg, _packed(16, chars=50)
    if name == "cove_mt":
        over = {"model.vocab_size": 1000, "model.tgt_vocab_size": 1000, "model.unroll": 16}
        cfg = _cfg(translate, "size=small", **over)
        shapes = {k: ((B, 16), I32) for k in ("input_ids", "input_mask", "decoder_input_ids",
                                               "decoder_target_ids", "decoder_mask")}  # fmt: skip
        return cfg, shapes
    if name in ("word2vec_sg", "word2vec_cbow"):
        arch = name.rsplit("_", 1)[1]
        cfg = _cfg(word2vec, f"arch={arch}", **{"model.vocab_size": 1000, "data.seq_len": 64})
        c, w, k = 64, cfg.model.window, cfg.data.options.negatives
        return cfg, {"tokens": ((B, c + 2 * w), I32), "sentence": ((B, c + 2 * w), I32),
                     "window": ((B, c), I32), "negatives": ((B, c, k), I32)}  # fmt: skip
    if name == "glove":
        cfg = _cfg(glove, "", **{"model.vocab_size": 1000, "data.seq_len": 256})
        return cfg, {"row": ((B, 256), I32), "col": ((B, 256), I32),
                     "log_count": ((B, 256), F32), "weight": ((B, 256), F32)}  # fmt: skip
    raise KeyError(name)


# XLA / formula at most: the excess is the uncounted elementwise work (GELU's tanh polynomial,
# LayerNorm, softmax, dropout masks, the LSTM gates' nonlinearities, the loss); measured 1.02 to
# 1.04 for the transformers and LSTMs. GloVe's gathers add a scatter-add of D per looked-up row
# in the backward pass to its 6 D per entry (measured 1.37).
BOUNDS = {
    **dict.fromkeys(
        ["bert_pretrain", "bert_mlm_all", "gpt_lm", "bert_classifier", "gpt_classifier",
         "bert_tagger", "gpt_tagger", "elmo_lm", "cove_mt"],
        1.08,
    ),
    "glove": 1.4,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_formula_matches_xla_within_the_elementwise_excess(name):
    cfg, shapes = _case(name)
    formula = B * flops.train_flops_per_example(cfg, {k: np.zeros(s, d) for k, (s, d) in
                                                       shapes.items()})  # fmt: skip
    xla = _xla_flops(cfg, shapes)
    print(f"{name}: xla {xla:.4g} formula {formula:.4g} ratio {xla / formula:.4f}")
    assert 1.0 <= xla / formula <= BOUNDS[name], (xla, formula)


@pytest.mark.parametrize("arch", ["sg", "cbow"])
def test_word2vec_formula_counts_the_algorithms_products(arch):
    """A plain SGNS over gathered rows (one product per context slot and scored word, as
    word2vec.c) matches the formula within 10% (CBOW's context sum is counted as a masked
    product; its backward is a broadcast, a little cheaper); the model's own step does at least
    that work and at most 3x it (banded blocks score g + 2W words per block of g centres: 2.6x
    the pairs at g = tlx.models.embeddings.BAND = 16, W = 5)."""
    cfg, shapes = _case(f"word2vec_{arch}")
    w, k, dim = cfg.model.window, cfg.data.options.negatives, cfg.model.dim
    c = shapes["window"][0][1]
    formula = B * flops.train_flops_per_example(cfg, {n: np.zeros(s, d) for n, (s, d) in
                                                       shapes.items()})  # fmt: skip

    def plain(vin, vout, mask):  # vin [B, C + 2W, D], vout [B, C (1 + K), D], mask [B, C, 2W]
        ctx = jnp.stack([vin[:, w + o : w + o + c] for o in range(-w, w + 1) if o], 2)
        centre, noise = vout[:, :c], vout[:, c:].reshape(B, c, k, dim)
        if arch == "cbow":
            h = jnp.einsum("bci,bcid->bcd", mask, ctx)  # [B, C, D]
            pos, neg = jnp.einsum("bcd,bcd->bc", h, centre), jnp.einsum("bcd,bckd->bck", h, noise)
        else:
            pos = jnp.einsum("bcid,bcd->bci", ctx, centre)  # [B, C, 2W]
            neg = jnp.einsum("bcid,bckd->bcik", ctx, noise)  # [B, C, 2W, K]
        return jax.nn.softplus(-pos).sum() + jax.nn.softplus(neg).sum()

    args = (jax.ShapeDtypeStruct((B, c + 2 * w, dim), F32),
            jax.ShapeDtypeStruct((B, c * (1 + k), dim), F32),
            jax.ShapeDtypeStruct((B, c, 2 * w), F32))  # fmt: skip
    reference = jax.jit(jax.grad(plain, (0, 1))).lower(*args).cost_analysis()["flops"]
    model = _xla_flops(cfg, shapes, gathered_rows=True)
    print(f"word2vec {arch}: plain {reference / formula:.4f} model {model / formula:.4f}")
    assert 0.95 <= reference / formula <= 1.1, (reference, formula)
    assert 1.0 <= model / formula <= 3.0, (model, formula)


def test_peak_table_override_and_unknown_hardware():
    assert flops.peak_tflops("TPU v5 lite") == 197.0 and flops.peak_tflops("TPU v5") == 459.0
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == 989.5
    assert flops.peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert flops.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert flops.peak_tflops("NVIDIA H200") == 989.5
    assert flops.peak_tflops("cpu") is None
    assert flops.peak_tflops("cpu", override=1.5) == 1.5  # the flag beats the table


def test_models_without_a_formula_get_none():
    cfg = _cfg(__import__("configs.embeddings.classify", fromlist=["x"]), "task=sst2,runlocal")
    assert flops.train_flops_per_example(cfg, {"input_ids": np.zeros((B, 16), np.int32)}) is None
