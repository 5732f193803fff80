"""Static word embeddings: word2vec (skip-gram / CBOW with negative sampling) and GloVe.

Both models are a few [V, D] tables, and a step touches a few thousand of their rows. So each
model exposes `lookups(batch)`, the rows a batch reads from each table, and `__call__(batch,
rows=...)`, the outputs computed from those gathered rows alone. `tlx.sparse` differentiates
with respect to the gathered rows and scatter-adds the updates back, instead of forming dense
[V, D] gradients; called without `rows`, the models gather themselves, so the ordinary dense
optax step trains them too (the benchmark compares the two).

word2vec batches (data_pipelines/skipgram.py) are rows of the subsampled corpus: `tokens`
[B, C + 2W] (C centres with W words of context either side), `sentence` [B, C + 2W] (-1 =
padding), `window` [B, C] (each centre's reduced window, 1..W, as in word2vec.c) and `negatives`
[B, C, K] (noise words from the unigram^0.75 table). Context pairs are formed here by shifting
the row, so the pipeline ships one id per word, not one per (centre, context) pair.

Two noise formulations, told apart by the batch (data options `noise_group`, `noise_draws`):
  per centre  `negatives` [B, C, K]: each centre's K noise words, shared by that centre's
              context pairs (word2vec.c draws per pair); every pair costs (1 + K) dot products,
              and the step gathers and scatters C K noise rows per row;
  per group   `group_negatives` [B, C / G, S, K]: G consecutive centres share S draws of K
              noise words, each pair's noise loss the mean over the S draws (weight 1/S). A
              group's noise scores are one [G + 2W, D] x [D, S K] product, taken once per
              context position and weighted by how many of the group's pairs have their context
              there; the step touches C S K / G noise rows per row. Each noise row then sums the
              gradients of ~G m / S pairs (m pairs per centre): at lr 0.025 that mass must stay
              near what word2vec's frequent noise words see (tens), or the shared rows and the
              context vectors grow together and diverge (S = 8 per 512-centre row did).

Precision (`dtype`, `param_dtype`): the tables are kept in param_dtype; the gathered rows are
cast to the compute dtype for the dot products and the logits come back in float32, where the
loss is taken. float32 / float32 is the plain path.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

ARCHS = ("sg", "cbow")


def _table(module: nn.Module, name: str, shape, init) -> jnp.ndarray:
    axes = ("vocab", "embed")[: len(shape)]
    dtype = jnp.dtype(module.param_dtype)
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def context_mask(batch: dict, window: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(the 2W context offsets, mask [B, C, 2W]): context o of centre c is row position
    c + W + o, and counts when |o| <= the centre's window and both words are in the same (real)
    sentence."""
    offsets = [o for o in range(-window, window + 1) if o]
    sent = batch["sentence"]  # [B, C + 2W]
    c = sent.shape[1] - 2 * window
    centre_sent = sent[:, window : window + c]  # [B, C]
    ctx_sent = jnp.stack([sent[:, window + o : window + o + c] for o in offsets], -1)
    mask = (
        (jnp.abs(jnp.array(offsets)) <= batch["window"][..., None])
        & (ctx_sent == centre_sent[..., None])
        & (centre_sent[..., None] >= 0)
    )
    return offsets, mask


class Word2Vec(nn.Module):
    """Skip-gram or CBOW with negative sampling (Mikolov et al. 2013).

    `input` holds the word vectors (the ones exported), `output` the context/noise vectors;
    initialised as word2vec.c does: input uniform in +-0.5/D, output zero.
    """

    vocab_size: int
    dim: int = 100
    arch: str = "sg"
    window: int = 5
    dtype: str = "float32"  # the dot products'
    param_dtype: str = "float32"  # the tables'

    def setup(self):
        if self.arch not in ARCHS:
            raise ValueError(f"word2vec arch must be one of {ARCHS}, got {self.arch!r}")
        shape = (self.vocab_size, self.dim)
        self.input = _table(self, "input", shape, _uniform(0.5 / self.dim))
        self.output = _table(self, "output", shape, nn.initializers.zeros)

    def lookups(self, batch: dict) -> dict[str, jnp.ndarray]:
        tokens, w = batch["tokens"], self.window
        c = tokens.shape[1] - 2 * w
        centres = tokens[:, w : w + c]  # [B, C]
        # Both predict the centre word (and its noise words) from its context, as word2vec.c
        # and gensim do: skip-gram from each context word's vector, CBOW from their mean.
        return {"input": tokens, "output": jnp.concatenate([centres, _noise_ids(batch)], 1)}

    def __call__(self, batch: dict, train: bool = False, rows: dict | None = None):
        centres = batch["tokens"].shape[1] - 2 * self.window
        if batch["window"].shape[1] != centres:
            raise ValueError(
                f"model.window={self.window} but the batch rows hold {batch['window'].shape[1]} "
                f"centres in {batch['tokens'].shape[1]} tokens: set data and model windows equal"
            )
        if rows is None:  # dense path: gather here (tlx.sparse passes the gathered rows)
            idx = self.lookups(batch)
            rows = {"input": self.input[idx["input"]], "output": self.output[idx["output"]]}
        w = self.window
        b, c = batch["window"].shape
        offsets, mask = context_mask(batch, w)
        dtype = jnp.dtype(self.dtype)
        vin, vout = rows["input"].astype(dtype), rows["output"].astype(dtype)
        centre_out = vout[:, :c]  # [B, C, D]
        if "group_negatives" in batch:
            groups, s, k = batch["group_negatives"].shape[1:]
            noise = vout[:, c:].reshape(b, groups, s * k, -1)  # [B, C / G, S K, D]
        else:
            s, k = 1, batch["negatives"].shape[2]
            noise = vout[:, c:].reshape(b, c, k, -1)  # [B, C, K, D]
        grouped = "group_negatives" in batch
        if self.arch == "sg":
            # Pair (centre, context): the context word's vector scores the centre word and the
            # noise words. word2vec.c draws fresh noise per pair; here a centre's pairs share
            # one draw (per centre) or a group's pairs share S draws (per group).
            pos = _banded_scores(centre_out, vin, w)  # [B, C, 2W]
            pos_mask = mask
            if grouped:  # a context position's scores serve all of the group's pairs there
                g = c // noise.shape[1]
                pairs = _group_pairs(mask, w, g)  # [B, C/G, G+2W]
                ctx = _windows(vin, g, g + 2 * w)  # [B, C/G, G+2W, D]
                neg = jnp.einsum("bjpd,bjnd->bjpn", ctx, noise)  # [B, C/G, G+2W, SK]
                neg_weight = pairs / s
            else:
                neg = _banded_noise_scores(vin, noise, w)  # [B, C, 2W, K]
                neg_weight = mask.astype(jnp.float32)
        else:
            n = mask.sum(-1, keepdims=True).astype(jnp.float32)  # [B, C, 1]
            total = _banded_sum(mask.astype(vin.dtype), vin, w)  # [B, C, D]
            # word2vec.c / gensim (cbow_mean=1) feed the mean forward but hand every context
            # word the full error, not 1/n of it: value = mean, gradient = as for the sum.
            h = total + jax.lax.stop_gradient(total / jnp.maximum(n, 1.0).astype(dtype) - total)
            pos = jnp.einsum("bcd,bcd->bc", h, centre_out)[..., None]  # [B, C, 1]
            pos_mask = n > 0
            neg_weight = pos_mask[..., 0].astype(jnp.float32)  # [B, C]
            if grouped:
                groups = noise.shape[1]
                hg = h.reshape(b, groups, c // groups, -1)  # [B, C / G, G, D]
                neg = jnp.einsum("bjcd,bjnd->bjcn", hg, noise)  # [B, C / G, G, S K]
                neg_weight = neg_weight.reshape(b, groups, -1) / s
            else:
                neg = jnp.einsum("bcd,bckd->bck", h, noise)  # [B, C, K]
        outputs = {
            "pos_logits": pos.astype(jnp.float32),
            "pos_mask": pos_mask,
            "neg_logits": neg.astype(jnp.float32),
            "neg_weight": neg_weight,
        }
        return outputs, {}

    def word_vectors(self):
        return self.input


BAND = 16  # centres per block of the banded product (a shared-noise step: 8 -> 7.8 ms, 16 -> 6.3)


def _banded_scores(v: jnp.ndarray, u: jnp.ndarray, w: int) -> jnp.ndarray:
    """scores[b, c, i] = v[b, c] . u[b, c + W + offset_i] for the 2W offsets.

    Per-offset elementwise products reduced over D are slow on CPU; instead each block of
    BAND consecutive centres takes one small matrix product with the BAND + 2W words around it
    ([BAND, D] x [D, BAND + 2W], 2.6x the needed dot products at BAND 16 and W 5, yet faster
    on CPU than BAND 8's 1.8x: fewer, larger products) and keeps the band."""
    b, c, d = v.shape
    g, nb, onehot = _band_blocks(c, w)
    full = jnp.einsum("bncd,bnwd->bncw", v.reshape(b, nb, g, d), _windows(u, g, g + 2 * w))
    scores = jnp.einsum("bnjp,jip->bnji", full, onehot.astype(full.dtype))
    return scores.reshape(b, c, 2 * w)


def _windows(u: jnp.ndarray, g: int, span: int) -> jnp.ndarray:
    """u[:, window] for window[j] = j g + arange(span), j < (L - span + g) / g: the overlapping
    windows of `span` rows that start every `g` rows of u [B, L, D], from reshapes and slices
    of u. Equal to the gather; its gradient is a pad, not a scatter into a zero [B, L, D]
    buffer (which XLA:CPU materialises and copies: ~1.4 ms of a 10 ms word2vec step)."""
    b, n, d = u.shape
    nb, chunks = (n - span + g) // g, -(-span // g)
    need = (nb + chunks - 1) * g
    u = jnp.pad(u, ((0, 0), (0, need - n), (0, 0))) if need > n else u[:, :need]
    blocks = u.reshape(b, nb + chunks - 1, g, d)
    return jnp.concatenate([blocks[:, k : k + nb] for k in range(chunks)], 2)[:, :, :span]


def _band_blocks(c: int, w: int, g: int = 0):
    """(block size g, blocks nb, offset one-hot [g, 2W, g + 2W]); block n's window is the
    g + 2W row positions from n g (`_windows`); g = 0 picks BAND (or the whole row when BAND
    does not divide it)."""
    g = g or (BAND if c % BAND == 0 else c)
    nb = c // g
    offsets = [o for o in range(-w, w + 1) if o]
    # Centre j of a block sits at window position j + W; its offset o at j + W + o.
    pick = jnp.arange(g)[:, None] + w + jnp.array(offsets)[None]  # [g, 2W]
    onehot = jax.nn.one_hot(pick, g + 2 * w, dtype=jnp.float32)  # [g, 2W, g + 2W]
    return g, nb, onehot


def _banded_noise_scores(u: jnp.ndarray, noise: jnp.ndarray, w: int) -> jnp.ndarray:
    """scores[b, c, i, k] = u[b, c + W + offset_i] . noise[b, c, k]: every context word of a
    centre against that centre's noise words, from one [g + 2W, D] x [D, g K] product per
    block of g centres."""
    b, c, k, d = noise.shape
    g, nb, onehot = _band_blocks(c, w)
    full = jnp.einsum("bnpd,bnqd->bnpq", _windows(u, g, g + 2 * w), noise.reshape(b, nb, g * k, d))
    full = full.reshape(b, nb, g + 2 * w, g, k)  # [B, nb, window position, centre, noise]
    scores = jnp.einsum("bnpjk,jip->bnjik", full, onehot.astype(full.dtype))
    return scores.reshape(b, c, 2 * w, k)


def _banded_sum(mask: jnp.ndarray, u: jnp.ndarray, w: int) -> jnp.ndarray:
    """total[b, c] = sum_i mask[b, c, i] u[b, c + W + offset_i]: CBOW's context sum, as one
    [g, g + 2W] x [g + 2W, D] product per block (the band matrix holds the mask)."""
    b, c, _ = mask.shape
    g, nb, onehot = _band_blocks(c, w)
    band = jnp.einsum("bnji,jip->bnjp", mask.reshape(b, nb, g, 2 * w), onehot.astype(mask.dtype))
    return jnp.einsum("bnjp,bnpd->bnjd", band, _windows(u, g, g + 2 * w)).reshape(b, c, -1)


def _group_pairs(mask: jnp.ndarray, w: int, g: int) -> jnp.ndarray:
    """pairs [B, C/G, G + 2W]: how many real pairs of group j's centres have their context at
    each position of the group's window."""
    b, c, _ = mask.shape
    _, nb, onehot = _band_blocks(c, w, g)
    pairs = jnp.einsum(
        "bnji,jip->bnp", mask.reshape(b, nb, g, 2 * w).astype(jnp.float32), onehot
    )  # fmt: skip
    return pairs


def _noise_ids(batch: dict) -> jnp.ndarray:
    """[B, C K] (per centre) or [B, C S K / G] (per group): the noise words' output rows."""
    neg = batch["group_negatives"] if "group_negatives" in batch else batch["negatives"]
    return neg.reshape(neg.shape[0], -1)


class GloVe(nn.Module):
    """GloVe (Pennington et al. 2014): w_i . w~_j + b_i + b~_j fits log X_ij, weighted by
    f(X_ij). Batches are co-occurrence entries `row`, `col` [B, E] and `count` [B, E] (0 =
    padding). Tables start uniform in +-0.5/D like glove.c; the exported vectors are W + W~."""

    vocab_size: int
    dim: int = 100
    dtype: str = "float32"  # the dot product's
    param_dtype: str = "float32"  # the tables'

    def setup(self):
        v, d = self.vocab_size, self.dim
        init = _uniform(0.5 / d)
        self.w = _table(self, "w", (v, d), init)
        self.w_ctx = _table(self, "w_ctx", (v, d), init)
        self.b = _table(self, "b", (v,), init)
        self.b_ctx = _table(self, "b_ctx", (v,), init)

    def lookups(self, batch: dict) -> dict[str, jnp.ndarray]:
        row, col = batch["row"], batch["col"]
        return {"w": row, "w_ctx": col, "b": row, "b_ctx": col}

    def __call__(self, batch: dict, train: bool = False, rows: dict | None = None):
        if rows is None:
            idx = self.lookups(batch)
            rows = {name: getattr(self, name)[i] for name, i in idx.items()}
        dtype = jnp.dtype(self.dtype)
        dot = jnp.einsum("bed,bed->be", rows["w"].astype(dtype), rows["w_ctx"].astype(dtype))
        f32 = jnp.float32  # the biases and the sum in float32, in the plain path's order
        prediction = dot.astype(f32) + rows["b"].astype(f32) + rows["b_ctx"].astype(f32)
        return {"prediction": prediction}, {}  # [B, E]

    def word_vectors(self):
        return self.w + self.w_ctx
