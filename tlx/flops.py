"""Training FLOPs per example of each model family, and the chip's peak: the two halves of MFU.

What is counted (the convention of Kaplan et al. 2020 and PaLM's model FLOPs utilisation):
  * matrix products only, 2 FLOPs per multiply-add, of the model as the step shapes it (padded
    positions included: the step computes them);
  * training = 3 x forward: the backward pass takes one product for the input's gradient and
    one for the weight's. A product whose input carries no gradient (a frozen table's output,
    a `stop_gradient`ed encoder) is counted 2x, or 1x when nothing behind it trains;
  * attention's T x T scores and weighted sums in full, causal or not (the step computes the
    masked half too);
  * NOT counted: embedding lookups, LayerNorm, softmax, activations, dropout, the loss, the
    optimizer update, rematerialised recomputation. So XLA's own count (tests/test_flops.py)
    is a little higher than these.

`train_flops_per_example(cfg, batch)` dispatches on `cfg.model.name`; None for a model with no
formula here (the word-level BiLSTM task models), so the loop logs no MFU rather than a guess.
"""

import math

import numpy as np

from tlx import heads, models

TRAIN = 3.0  # forward + backward (input and weight gradients)

# bf16 dense (no sparsity) peak TFLOP/s per chip, matched against jax.devices()[0].device_kind
# (lower-cased), most specific first. Vendor figures: Google Cloud TPU system architecture pages
# (v4 275, v5e 197, v5p 459, v6e Trillium 918); NVIDIA datasheets list bf16 Tensor Core peaks
# "with sparsity", halved here: A100 312 (dense as listed), H100 SXM 1,979 / 2, H100 PCIe
# 1,513 / 2, H100 NVL 1,671 / 2, H200 SXM 1,979 / 2, H200 NVL 1,671 / 2.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v6 lite", 918.0),
    ("tpu v6e", 918.0),
    ("tpu v5 lite", 197.0),
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),
    ("tpu v4", 275.0),
    ("h200 nvl", 835.5),
    ("h200", 989.5),
    ("h100 nvl", 835.5),
    ("h100 pcie", 756.5),
    ("h100", 989.5),
    ("a100", 312.0),
)


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
    """The chip's bf16 dense peak in TFLOP/s: `override` when > 0, else PEAK_TFLOPS' entry for
    `device_kind`, else None (unknown hardware, a CPU: no MFU is better than a made-up one)."""
    if override and override > 0:
        return float(override)
    kind = device_kind.lower()
    for key, peak in PEAK_TFLOPS:
        if key in kind:
            return peak
    return None


# ------------------------------------------------------------------------------ transformers


def transformer_stack(num_layers: int, d: int, inter: int, t: int) -> float:
    """Forward FLOPs of `num_layers` blocks over one row of T positions:
    L (2 T (4 d^2 + 2 d I) + 4 T^2 d): Q, K, V, output projections, the MLP's two products,
    then Q K^T and A V. Trained (x3) this is the familiar 6 N T + 12 L T^2 d with N the
    non-embedding matrix parameters L (4 d^2 + 2 d I)."""
    return num_layers * (2 * t * (4 * d * d + 2 * d * inter) + 4 * t * t * d)


def bert_pretrain(num_layers, d, inter, vocab, t: int, predictions: int) -> float:
    """BERT MLM + NSP, per example: 3 x [stack + pooler 2 d^2 + NSP 2 d 2 + MLM head over P
    scored positions 2 P (d^2 + d V)] (transform, then the decoder tied to the token table;
    P = T with mlm_all_positions)."""
    fwd = transformer_stack(num_layers, d, inter, t) + 2 * d * d + 4 * d
    fwd += 2 * predictions * (d * d + d * vocab)
    return TRAIN * fwd


def gpt_lm(num_layers, d, inter, vocab, t: int) -> float:
    """GPT causal LM, per example: 3 x [stack + tied logits 2 T d V] (the fused chunked
    cross-entropy computes the same products)."""
    return TRAIN * (transformer_stack(num_layers, d, inter, t) + 2 * t * d * vocab)


def _head_forward(head, d: int, t: int, tagging: bool) -> float:
    """A tlx.heads sentence / multi-task / tagging head: rows x 2 (D' H + H C) (or 2 D' C
    without a hidden layer), rows = T for tagging, 1 for a sentence; D' = 4 d for last4_concat."""
    members = getattr(head, "num_classes", 0)
    classes = members if isinstance(members, tuple) else (members,)
    width = 4 * d if head.features == "last4_concat" else d
    hidden = head.hidden_size
    per_class = sum(2 * (width * hidden + hidden * c) if hidden else 2 * width * c for c in classes)
    return (t if tagging else 1) * per_class


def transformer_task(module, t: int, lm_coef: float) -> float:
    """BERT / GPT finetuning (tlx.models.compose): the encoder stack (+ BERT's pooler 2 d^2
    when the head reads `pooled`) 3x, or 1x under frozen_encoder (stop_gradient: no backward);
    the head 3x; GPT-1's auxiliary LM (lm_coef > 0) adds the tied logits 2 T d V (3x, or 1x
    frozen: its inputs are cut too)."""
    c, head = module.encoder.config, module.head
    encoder = transformer_stack(c.num_layers, c.hidden_size, c.intermediate_size, t)
    if getattr(head, "features", None) == "pooled":
        encoder += 2 * c.hidden_size * c.hidden_size
    if lm_coef:
        encoder += 2 * t * c.hidden_size * c.vocab_size
    tagging = isinstance(head, heads.TaggingHead)
    enc_factor = 1.0 if module.frozen_encoder else TRAIN
    return enc_factor * encoder + TRAIN * _head_forward(head, c.hidden_size, t, tagging)


# ------------------------------------------------------------------------------ recurrent


def lstm(t: int, inputs: int, hidden: int, proj: int = 0, input_grad: bool = True) -> float:
    """One LSTM direction over T steps, trained: input gates 2 T D 4H, recurrent 2 T P 4H
    (P = proj or H), projection 2 T H P; 3x each, the input product 2x when its input carries
    no gradient (`input_grad=False`: frozen GloVe)."""
    out = proj or hidden
    gates_in = 2 * t * inputs * 4 * hidden
    rest = 2 * t * out * 4 * hidden + (2 * t * hidden * proj if proj else 0)
    return (TRAIN if input_grad else 2.0) * gates_in + TRAIN * rest


def elmo_bilm(c, t: int, chars: int) -> float:
    """ELMo biLM per example of T tokens, C characters each, trained (3x):
    char CNN: sum over filters (w, n) of 2 T (C - w + 1) w d_char n; highway layers 2 T (2 F^2)
    each (gate and transform, F = sum of n); projection 2 T F P; then 2 directions x layers of
    LSTMP (lstm(); every layer reads width P); then the softmax both directions share:
    2 directions x 2 T P V (full) or 2 T P (K + 1) (sampled: K shared samples + the target)."""
    f = sum(n for _, n in c.filters)
    fwd = sum(2 * t * (chars - w + 1) * w * c.char_dim * n for w, n in c.filters)
    fwd += c.highway_layers * 2 * t * 2 * f * f + 2 * t * f * c.projection_dim
    scored = c.vocab_size if c.softmax == "full" else c.num_samples + 1
    fwd += 2 * 2 * t * c.projection_dim * scored
    layers = 2 * c.num_layers * lstm(t, c.projection_dim, c.lstm_dim, c.projection_dim)
    return TRAIN * fwd + layers


def cove_mt(c, s: int, t: int) -> float:
    """CoVe's MT-LSTM per example of S source and T target positions, trained:
    encoder: 2 directions x num_layers of lstm() (layer 0 reads GloVe E, 2x when frozen;
    later layers 2H); decoder memory: keys 2 S 2H Hd + key bias 2 S 2H; per target step:
    layer 0 gates from [z; h~] 2 (Et + Hd) 4Hd, every layer's recurrent 2 Hd 4Hd, later
    layers' input 2 Hd 4Hd, attention scores 2 S Hd and context 2 S 2H, h~ 2 (2H + Hd) Hd,
    logits 2 Hd Vt; all 3x."""
    h, hd, et = c.hidden, c.dec_hidden, c.tgt_embed
    encoder = sum(
        2 * lstm(s, c.embed_dim if k == 0 else 2 * h, h, input_grad=k > 0 or not c.freeze_embed)
        for k in range(c.num_layers)
    )
    memory = 2 * s * 2 * h * hd + 2 * s * 2 * h
    step = 2 * (et + hd) * 4 * hd + c.decoder_layers * 2 * hd * 4 * hd
    step += (c.decoder_layers - 1) * 2 * hd * 4 * hd
    step += 2 * s * hd + 2 * s * 2 * h + 2 * (2 * h + hd) * hd + 2 * hd * c.tgt_vocab_size
    return encoder + TRAIN * (memory + t * step)


# ------------------------------------------------------------------------------ word vectors


def word2vec(dim: int, window: int, negatives: int, centres: int, arch: str, shared: int = 0):
    """SGNS per row of C centre words, trained (3x), counting every one of the 2W context slots
    (the step scores them all and masks the reduced windows and sentence ends afterwards).
    Noise per centre (shared = 0, word2vec.c's count): skip-gram scores 1 + K output vectors
    per slot, 2 D (1 + K) 2W per centre; CBOW sums the context, 2 D 2W, then 2 D (1 + K).
    Noise per row (shared = S > 0: S K noise words every pair of the row shares): skip-gram
    2 D 2W C for the pairs plus 2 D (C + 2W) S K, every row position against the noise once;
    CBOW 2 D 2W C + 2 D C (1 + S K). Products a formulation adds beyond these (the banded
    blocks' extra band) are not credited."""
    c, k, s = centres, negatives, shared
    if arch == "sg":
        noise = 2 * dim * (c + 2 * window) * s * k if s else 2 * dim * 2 * window * k * c
        return TRAIN * (2 * dim * 2 * window * c + noise)
    scored = 1 + (s * k if s else k)
    return TRAIN * c * (2 * dim * 2 * window + 2 * dim * scored)


def glove(dim: int, entries: int) -> float:
    """GloVe per row of E co-occurrence entries, trained: 3 x 2 D E (w_i . w~_j)."""
    return TRAIN * 2 * dim * entries


# ------------------------------------------------------------------------------ dispatch


FAMILIES = (
    "bert_pretrain", "bert_classifier", "bert_tagger", "gpt_lm", "gpt_classifier", "gpt_tagger",
    "elmo_lm", "cove_mt", "word2vec", "glove",
)  # fmt: skip


def _width(batch: dict, key: str, axis: int = 1) -> int:
    return int(np.shape(batch[key])[axis])


def train_flops_per_example(cfg, batch: dict) -> float | None:
    """Training FLOPs of one example (one row of the global batch) for the run `cfg` (its model
    section filled in: tlx.steps.fill_model_dims), with per-example shapes read from `batch`
    (any arrays or ShapeDtypeStructs: the loop's example batch). None without a formula."""
    name = cfg.model.name
    if name not in FAMILIES:
        return None
    module = models.build(cfg.model)
    if name == "bert_pretrain":
        c, t = module.config, _width(batch, "input_ids")
        p = t if module.mlm_all_positions else _width(batch, "masked_lm_positions")
        return bert_pretrain(c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size, t, p)
    if name == "gpt_lm":
        c = module.config
        return gpt_lm(
            c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size,
            _width(batch, "input_ids"),
        )  # fmt: skip
    if name in ("bert_classifier", "bert_tagger", "gpt_classifier", "gpt_tagger"):
        lm_coef = cfg.objective.get("lm_coef", 0.0) if "objective" in cfg else 0.0
        return transformer_task(module, _width(batch, "input_ids"), lm_coef)
    if name == "elmo_lm":
        return elmo_bilm(module.config, _width(batch, "char_ids"), _width(batch, "char_ids", 2))
    if name == "cove_mt":
        s, t = _width(batch, "input_ids"), _width(batch, "decoder_input_ids")
        return cove_mt(module.config, s, t)
    if name == "word2vec":
        opts = cfg.data.get("options", {})
        return word2vec(
            module.dim, module.window, opts.get("negatives", 5), _width(batch, "window"),
            module.arch, opts.get("shared_negatives", 0),
        )  # fmt: skip
    return glove(module.dim, _width(batch, "row"))


def tflops_per_device(flops_per_step: float, seconds_per_step: float, devices: int) -> float:
    """Achieved TFLOP/s of one chip: the step's FLOPs split evenly over `devices`."""
    if seconds_per_step <= 0 or not math.isfinite(seconds_per_step):
        return float("nan")
    return flops_per_step / seconds_per_step / devices / 1e12
