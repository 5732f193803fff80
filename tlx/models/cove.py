"""CoVe (McCann et al., 2017): an attentional LSTM translation model (MT-LSTM) whose encoder,
run over frozen GloVe, later gives contextual word vectors to downstream models.

  MTLSTM       en->de translation with teacher forcing: CoveEncoder + attentional decoder.
  CoveEncoder  GloVe [B, S, E] (frozen) -> joint BiLSTM, `num_layers` deep -> [[B, S, 2H]];
               the last layer's states are "CoVe". A downstream model holds an identically
               named `CoveEncoder(name="cove")` and loads `cove/.*` from the MT checkpoint.
  decoder      Luong et al. (2015) global attention with input feeding (McCann sec. 3):
                 h_t  = LSTM([z_{t-1}; h~_{t-1}], h_{t-1})         decoder_layers deep, [B, Hd]
                 a_t  = softmax_s(H (W1 h_t + b1))                 over real source positions
                 h~_t = tanh(W2 [sum_s a_ts H_s; h_t] + b2)         [B, Hd]
                 p(y_t | ...) = softmax(W_out dropout(h~_t) + b_out)
               where H [B, S, 2H] is the encoder's last layer and h~_0 = 0. With `bridge` the
               decoder starts from the encoder's final states, directions concatenated per layer
               (OpenNMT-py's convention for a bidirectional encoder; why Hd defaults to 2H).
  greedy_decode, beam_search   jittable decoding from `encode` / `init_decode_state` /
               `decode_step`, the same step the teacher-forced scan runs.

Parameter layout (B batch, S source, T target length, E GloVe width, H hidden per direction):
  cove/embed/embedding                     [Vs, E]   GloVe; no gradient when freeze_embed
  cove/bilstm/{forward,backward}_{k}/layer_0/cell/...   tlx.layers.recurrent.LSTMCell params
  decoder/embed/embedding                  [Vt, Et]
  decoder/layer_{k}/{input_kernel/kernel, recurrent_kernel, bias}   layer 0 reads [z; h~]
  decoder/attention_in/{kernel, bias}      [Hd, 2H]       W1, b1
  decoder/attention_out/{kernel, bias}     [2H + Hd, Hd]  W2, b2 (input [context; h_t])
  decoder/logits/{kernel, bias}            [Hd, Vt]
The released PyTorch MT-LSTM has two biases per LSTM (b_ih + b_hh): a converter sums them.

Precision and remat (tlx.precision): `dtype` for matmuls and states, float32 for the cell
states c, the attention softmax and the logits (summed in float32); `remat` checkpoints each
step of the encoder's and the decoder's scans.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx import precision
from tlx.heads import dense
from tlx.layers.embed import Embed
from tlx.layers.recurrent import BiLSTM, LSTMCell, lstm_step

# Ids of [PAD] / [CLS] / [SEP] in tlx word vocabularies; [CLS] and [SEP] serve as BOS and EOS.
PAD, BOS, EOS = 0, 2, 3


@dataclasses.dataclass(frozen=True)
class CoveConfig:
    """MT-LSTM shape. Defaults are the paper's widths except GloVe's (tlx ships 6B 50d)."""

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int = 50  # GloVe width; 300 at full size
    hidden: int = 300  # encoder, per direction
    num_layers: int = 2  # encoder BiLSTM layers
    decoder_layers: int = 2
    decoder_hidden: int = 0  # 0: 2 * hidden
    tgt_embed_dim: int = 0  # 0: embed_dim
    dropout_rate: float = 0.2
    freeze_embed: bool = True
    bridge: bool = True  # decoder starts from the encoder's final states (else zeros)
    unroll: int = 1
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        precision.check(self.dtype, self.param_dtype, self.remat)
        positive = ("src_vocab_size", "tgt_vocab_size", "embed_dim", "hidden", "num_layers")
        for name in (*positive, "decoder_layers", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)} must be positive")
        for name in ("decoder_hidden", "tgt_embed_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name}={getattr(self, name)} must be >= 0 (0: default)")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"model.dropout_rate={self.dropout_rate} must be in [0, 1)")
        if self.bridge and (
            self.decoder_layers != self.num_layers or self.dec_hidden != 2 * self.hidden
        ):
            raise ValueError(
                f"model.bridge=True needs model.decoder_layers={self.decoder_layers} == "
                f"model.num_layers={self.num_layers} and a decoder width {self.dec_hidden} == "
                f"2 * model.hidden={2 * self.hidden}; set model.bridge=False otherwise"
            )

    @property
    def dec_hidden(self) -> int:
        return self.decoder_hidden or 2 * self.hidden

    @property
    def tgt_embed(self) -> int:
        return self.tgt_embed_dim or self.embed_dim


class CoveEncoder(nn.Module):
    """(glove [B, S, E], every BiLSTM layer's states [[B, S, 2H]]); the last layer is CoVe.
    Padded positions are zero in every output. `return_carries` adds the BiLSTM's final
    carries [(forward, backward)] per layer, which the MT decoder starts from."""

    config: CoveConfig

    @nn.compact
    def __call__(
        self, input_ids, input_mask, *, deterministic: bool = True, return_carries: bool = False
    ):
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        mask = input_mask.astype(bool)  # [B, S]
        embed = Embed(
            cfg.src_vocab_size, cfg.embed_dim, dtype=dtype, param_dtype=param_dtype, name="embed"
        )
        glove = embed(input_ids)
        if cfg.freeze_embed:  # cut before the gather's backward: no [V, E] gradient is built
            glove = jax.lax.stop_gradient(glove)
        glove = jnp.where(mask[..., None], glove, 0.0)  # [B, S, E]
        layers, carries = BiLSTM(
            cfg.num_layers, cfg.hidden, separate=False, dropout_rate=cfg.dropout_rate,
            unroll=cfg.unroll, dtype=dtype, param_dtype=param_dtype, remat=cfg.remat,
            name="bilstm",
        )(glove, mask, deterministic=deterministic)  # fmt: skip
        return (glove, layers, carries) if return_carries else (glove, layers)


def _kernel(module: nn.Module) -> jnp.ndarray:
    return nn.unbox(module.variables["params"]["kernel"])


def _decoder_step(w: dict, memory: dict, state, gx0: jnp.ndarray):
    """One decoder step, a pure function of param arrays `w` (Flax modules cannot run inside a
    raw lax.scan). gx0 [B, 4Hd]: the target-embedding half of layer 0's gates, bias included.
    state = (per-layer carries, h~_{t-1} [B, Hd]) -> (new state, h~_t [B, Hd])."""
    carries, feed = state
    gx = gx0 + feed @ w["feed_kernel"]  # input feeding: layer 0 reads [z_{t-1}; h~_{t-1}]
    new, h = [], None
    for k, p in enumerate(w["layers"]):
        if k:
            gx = h @ p["input_kernel"] + p["bias"]  # [B, 4Hd]
        carry, h = lstm_step(p, carries[k], gx)
        new.append(carry)
    # H_s . (W1 h + b1) = keys_s . h + key_bias_s, keys precomputed once per source.
    scores = jnp.einsum("bsd,bd->bs", memory["keys"], h) + memory["key_bias"]  # [B, S]
    scores = scores.astype(jnp.float32)  # the softmax is a float32 island
    scores = jnp.where(memory["mask"], scores, jnp.finfo(scores.dtype).min)
    alpha = jax.nn.softmax(scores, axis=-1).astype(h.dtype)
    context = jnp.einsum("bs,bse->be", alpha, memory["states"])  # [B, 2H]
    out = jnp.concatenate([context, h], -1) @ w["out_kernel"] + w["out_bias"]
    feed = jnp.tanh(out)  # h~_t [B, Hd]
    return (tuple(new), feed), feed


class CoveDecoder(nn.Module):
    """Attentional LSTM decoder with input feeding over a CoveEncoder's last layer."""

    config: CoveConfig

    def setup(self):
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.embed = Embed(cfg.tgt_vocab_size, cfg.tgt_embed, dtype=dtype, param_dtype=param_dtype)
        self.layers = [
            LSTMCell(cfg.dec_hidden, dtype=dtype, param_dtype=param_dtype, name=f"layer_{k}")
            for k in range(cfg.decoder_layers)
        ]
        # Column- then row-parallel under the 'mlp' rule, like a transformer MLP.
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        self.attention_in = dense(2 * cfg.hidden, ("embed", "mlp"), "attention_in", **kw)
        self.attention_out = dense(cfg.dec_hidden, ("mlp", "embed"), "attention_out", **kw)
        # Logits: products in dtype, summed in float32.
        f32_sum = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)
        self.logits = dense(
            cfg.tgt_vocab_size, ("embed", "vocab"), "logits", **kw, dot_general=f32_sum
        )
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def _weights(self) -> dict:
        """The param arrays `_decoder_step` reads. Dense layers build their kernels on first
        call, so at init each is called once on zeros."""
        cfg = self.config
        hd, et, dtype = cfg.dec_hidden, cfg.tgt_embed, jnp.dtype(cfg.dtype)
        if self.is_initializing():
            for k, cell in enumerate(self.layers):
                cell.input_gates(jnp.zeros((1, et + hd if k == 0 else hd), dtype))
            self.attention_in(jnp.zeros((1, hd), dtype))
            self.attention_out(jnp.zeros((1, 2 * cfg.hidden + hd), dtype))
        layers = [
            {
                "recurrent_kernel": cell.recurrent_kernel,
                "input_kernel": _kernel(cell.input),
                "bias": cell.bias,
            }
            for cell in self.layers
        ]
        kernel0 = layers[0]["input_kernel"]  # [Et + Hd, 4Hd]
        w = {
            "embed_kernel": kernel0[:et],
            "feed_kernel": kernel0[et:],
            "layers": layers,
            "attn_kernel": _kernel(self.attention_in),
            "attn_bias": nn.unbox(self.attention_in.variables["params"]["bias"]),
            "out_kernel": _kernel(self.attention_out),
            "out_bias": nn.unbox(self.attention_out.variables["params"]["bias"]),
        }
        return jax.tree.map(lambda x: x.astype(dtype), w)

    def memory(self, states: jnp.ndarray, mask: jnp.ndarray, carries) -> dict:
        """What every step reads of the source: encoder states H [B, S, 2H], mask [B, S],
        attention keys H W1^T [B, S, Hd] and H b1 [B, S], and the bridged initial carries."""
        w = self._weights()
        memory = {
            "states": states,
            "mask": mask.astype(bool),
            "keys": jnp.einsum("bse,de->bsd", states, w["attn_kernel"]),
            "key_bias": states @ w["attn_bias"],
        }
        if self.config.bridge:  # [(fw (c, h), bw (c, h))] per layer -> [(c [B, 2H], h [B, 2H])]
            memory["init"] = tuple(
                tuple(jnp.concatenate(pair, -1) for pair in zip(fw, bw)) for fw, bw in carries
            )
        return memory

    def initial_state(self, memory: dict):
        """(per-layer carries, h~_0 = 0 [B, Hd])."""
        batch, hd = memory["states"].shape[0], self.config.dec_hidden
        zeros = jnp.zeros((batch, hd), memory["states"].dtype)
        cells = jnp.zeros((batch, hd), jnp.float32)  # c is float32 (tlx.layers.recurrent)
        carries = memory.get("init", tuple((cells, zeros) for _ in self.layers))
        return carries, zeros

    def _gates0(self, w: dict, ids: jnp.ndarray) -> jnp.ndarray:
        """ids [...] -> the target-embedding half of layer 0's gates [..., 4Hd], bias included."""
        return self.embed(ids) @ w["embed_kernel"] + w["layers"][0]["bias"]

    def _logits(self, feed: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
        feed = self.dropout(feed, deterministic=deterministic)
        return self.logits(feed).astype(jnp.float32)

    def __call__(self, memory: dict, ids: jnp.ndarray, *, deterministic: bool = True):
        """Teacher forcing: decoder inputs ids [B, T] -> (logits [B, T, Vt], h~ [B, T, Hd])."""
        w = self._weights()
        gates = self._gates0(w, ids)  # [B, T, 4Hd], one matmul for all steps
        gates = nn.with_logical_constraint(gates, ("batch", "length", "mlp"))
        _, feeds = jax.lax.scan(
            precision.checkpoint(functools.partial(_decoder_step, w, memory), self.config.remat),
            self.initial_state(memory),
            jnp.swapaxes(gates, 0, 1),
            unroll=self.config.unroll,
        )
        feeds = jnp.swapaxes(feeds, 0, 1)  # [B, T, Hd]
        logits = self._logits(feeds, deterministic)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab")), feeds

    def step(self, memory: dict, state, prev_ids: jnp.ndarray):
        """prev_ids [B] -> (logits [B, Vt] float32, new state)."""
        w = self._weights()
        state, feed = _decoder_step(w, memory, state, self._gates0(w, prev_ids))
        return self._logits(feed, True), state


class MTLSTM(nn.Module):
    """The translation model. `__call__(batch)` with `input_ids`, `input_mask` [B, S] (source),
    `decoder_input_ids` (BOS, then the target tokens) and `decoder_mask` [B, T] ->
    ({'logits': [B, T, Vt]}, {'hidden_states': [glove, *layers], 'cove': [B, S, 2H],
    'decoder_states': h~ [B, T, Hd]}). `encode`, `init_decode_state` and `decode_step` run the
    same decoder one step at a time (`model.apply(..., method=model.decode_step)`)."""

    config: CoveConfig

    def setup(self):
        self.cove = CoveEncoder(self.config)
        self.decoder = CoveDecoder(self.config)

    def _encode(self, batch, deterministic: bool):
        glove, layers, carries = self.cove(
            batch["input_ids"],
            batch["input_mask"],
            deterministic=deterministic,
            return_carries=True,
        )
        return glove, layers, self.decoder.memory(layers[-1], batch["input_mask"], carries)

    def encode(self, batch) -> dict:
        """Source -> the decoder's memory pytree (every leaf has a leading batch axis)."""
        return self._encode(batch, True)[2]

    def init_decode_state(self, memory: dict):
        return self.decoder.initial_state(memory)

    def decode_step(self, memory: dict, state, prev_ids: jnp.ndarray):
        """prev_ids [B] -> (logits [B, Vt] float32, new state)."""
        return self.decoder.step(memory, state, prev_ids)

    def __call__(self, batch, *, train: bool = False):
        glove, layers, memory = self._encode(batch, not train)
        logits, feeds = self.decoder(memory, batch["decoder_input_ids"], deterministic=not train)
        feeds = feeds * batch["decoder_mask"][..., None].astype(feeds.dtype)
        inter = {"hidden_states": [glove, *layers], "cove": layers[-1], "decoder_states": feeds}
        return {"logits": logits}, inter


def _no_specials(scores: jnp.ndarray) -> jnp.ndarray:
    """A translation never contains PAD or BOS: [B, V] logits or log-probs with both at -inf
    (after the log-softmax, so hypothesis scores stay the model's log-probabilities)."""
    return scores.at[:, jnp.array([PAD, BOS])].set(-jnp.inf)


def length_penalty(length, alpha: float):
    """GNMT's ((5 + |Y|) / 6)^alpha (Wu et al., 2016); |Y| counts EOS."""
    return ((5.0 + length) / 6.0) ** alpha


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def greedy_decode(model: MTLSTM, params, batch, max_len: int) -> jnp.ndarray:
    """Source batch -> ids [B, max_len]: argmax each step; PAD after EOS."""
    variables = {"params": params}
    memory = model.apply(variables, batch, method=model.encode)
    state = model.apply(variables, memory, method=model.init_decode_state)
    b = batch["input_ids"].shape[0]

    def body(carry, _):
        state, prev, done = carry
        logits, state = model.apply(variables, memory, state, prev, method=model.decode_step)
        tok = jnp.argmax(_no_specials(logits), -1).astype(jnp.int32)
        tok = jnp.where(done, PAD, tok)  # [B]
        return (state, tok, done | (tok == EOS)), tok

    init = (state, jnp.full((b,), BOS, jnp.int32), jnp.zeros((b,), bool))
    _, ids = jax.lax.scan(body, init, None, length=max_len)  # [max_len, B]
    return ids.T


@functools.partial(
    jax.jit, static_argnames=("model", "beam_size", "max_len", "alpha", "return_scores")
)
def beam_search(
    model: MTLSTM,
    params,
    batch,
    *,
    beam_size: int = 5,
    max_len: int = 50,
    alpha: float = 0.6,
    return_scores: bool = False,
):
    """Source batch -> best hypothesis ids [B, max_len] (PAD after EOS), and with return_scores
    its score [B]: log p(Y) / length_penalty(|Y|).

    Fairseq's rules, so beam_size=1 is exactly greedy: each step ranks 2K extensions of the K
    alive beams by log-prob; one ending in EOS is finished if it ranks in the top K (and
    dropped otherwise), the best K others stay alive. A row stops once K hypotheses finished;
    at max_len the top K are finished as they are. The length penalty ranks finished ones."""
    k, variables = beam_size, {"params": params}
    b = batch["input_ids"].shape[0]
    memory = model.apply(variables, batch, method=model.encode)
    memory = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), memory)  # [B * K, ...]
    state = model.apply(variables, memory, method=model.init_decode_state)
    neg = jnp.float32(-jnp.inf)
    rank = jnp.arange(2 * k)[None, :]  # [1, 2K]

    def step(c):
        i, prev, seqs, logp, state, fin_seqs, fin_scores, fin_count = c
        logits, state = model.apply(
            variables, memory, state, prev.reshape(-1), method=model.decode_step
        )
        vocab = logits.shape[-1]
        cand = logp[..., None] + _no_specials(jax.nn.log_softmax(logits)).reshape(b, k, vocab)
        top_lp, top = jax.lax.top_k(cand.reshape(b, k * vocab), 2 * k)  # [B, 2K]
        beam, tok = top // vocab, (top % vocab).astype(jnp.int32)
        top_seqs = jnp.take_along_axis(seqs, beam[..., None], 1).at[:, :, i].set(tok)
        done = fin_count >= k  # [B]
        end = (tok == EOS) | (i == max_len - 1)
        finish = end & (rank < k) & (top_lp > neg) & ~done[:, None]  # [B, 2K]
        new_scores = jnp.where(finish, top_lp / length_penalty(i + 1.0, alpha), neg)
        fin_scores, pick = jax.lax.top_k(jnp.concatenate([fin_scores, new_scores], 1), k)
        fin_seqs = jnp.take_along_axis(jnp.concatenate([fin_seqs, top_seqs], 1), pick[..., None], 1)
        fin_count = fin_count + finish.sum(1)
        logp, keep = jax.lax.top_k(jnp.where(tok == EOS, neg, top_lp), k)  # [B, K] alive
        seqs = jnp.take_along_axis(top_seqs, keep[..., None], 1)
        rows = (jnp.arange(b)[:, None] * k + jnp.take_along_axis(beam, keep, 1)).reshape(-1)
        state = jax.tree.map(lambda x: x[rows], state)
        prev = jnp.take_along_axis(tok, keep, 1)
        return i + 1, prev, seqs, logp, state, fin_seqs, fin_scores, fin_count

    def cond(c):
        return (c[0] < max_len) & jnp.any(c[-1] < k)

    init = (
        jnp.int32(0),
        jnp.full((b, k), BOS, jnp.int32),
        jnp.full((b, k, max_len), PAD, jnp.int32),
        jnp.zeros((b, k)).at[:, 1:].set(neg),  # one live beam at first: no duplicate starts
        state,
        jnp.full((b, k, max_len), PAD, jnp.int32),
        jnp.full((b, k), neg),
        jnp.zeros((b,), jnp.int32),
    )
    *_, fin_seqs, fin_scores, _ = jax.lax.while_loop(cond, step, init)
    best = jnp.argmax(fin_scores, 1)  # [B]
    ids = jnp.take_along_axis(fin_seqs, best[:, None, None], 1)[:, 0]
    return (ids, jnp.max(fin_scores, 1)) if return_scores else ids
