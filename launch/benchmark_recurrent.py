r"""Recurrent train-step benchmark: tlx's ELMo biLM and CoVe MT-LSTM vs PyTorch peers (CPU or GPU).

  python launch/benchmark_recurrent.py [--variants=bilm,mt] [--steps=10] [--warmup=2] \
      [--unroll=0 | --unroll=1,4] [--peers=torch] [--out=runs/bench_recurrent.json]

Setups (synthetic batches, every row full length, one document per row):
  bilm  tlx ElmoLM exactly as configs/elmo/pretrain.py:size=small builds it (char CNN 16-d chars,
        filters (1,16) (2,16) (3,32) (4,64) (5,128), 2 highways, projection P 128; two separate
        directional 2-layer LSTMP stacks, H 512 -> P 128, residual into layer 2, cell and
        projection clipping at 3, dropout 0.1; one tied softmax over V = 10,000 words, objective
        `bilm` with the config's fused chunked cross-entropy), batch 32, seq 64, 50 chars a word.
        Peer: the same shapes in PyTorch: Embedding(261, 16), one Conv1d per filter, max over
        chars, relu, 2 highways, Linear(256, 128); per direction two nn.LSTM(128, 512,
        proj_size=128) with the residual into layer 2 (the backward stack reads the time-flipped
        input; `bidirectional=True` would leak the future into layer 2); one Linear(128, V) for
        both directions; full softmax cross-entropy. nn.LSTM has no cell or projection clipping,
        so the peer has none. tlx scores all L positions per direction (the last forward and the
        first backward target with weight 0), the peer L - 1.
  mt    tlx MTLSTM as configs/cove/translate.py:size=full builds it (encoder 2-layer joint BiLSTM,
        300 per direction over frozen embeddings; decoder 2 LSTM layers of 600 with input feeding,
        started from the encoder's final states (bridge), global attention, dropout 0.2) with
        embed_dim 300 (CoVe's GloVe 300d), source vocab 20,000 and target vocab 8,000, batch 64,
        source and target length 32. The real config reads 400k GloVe words; the table is frozen
        (optim.frozen: no gradient, no Adam state), so its size barely changes the step.
        Peer: frozen nn.Embedding(20000, 300), nn.LSTM(300, 300, num_layers=2,
        bidirectional=True, dropout=0.2) (for an encoder the joint stack is CoVe's), target
        Embedding(8000, 300), 2 nn.LSTMCell(600) with input feeding [y_{t-1}; h~_{t-1}], initial
        states [fw; bw] of the encoder's final ones per layer; attention as cove.py:
        a = softmax_s(H (W1 h_t + b1)) with the keys H W1 precomputed once per source,
        h~ = tanh(W2 [c; h] + b2), dropout 0.2 on h~, Linear(600, 8000), cross-entropy over every
        target token. nn.LSTM / LSTMCell carry two gate biases (b_ih + b_hh), tlx one.
Both sides time a full train step: forward, backward, Adam (eps 1e-8, the config's lr, no weight
decay) after clipping to global norm (1 for bilm, 5 for mt). tlx runs `tlx.steps.build(cfg,
batch)`'s jitted, donated train_step; the peer clip_grad_norm_ + torch.optim.Adam (fused on
CUDA). After `--warmup` steps, `--steps` steps are timed one by one and the median is reported.
Each measurement runs in its own child process (`--only=SETUP:VARIANT`) so torch's threads never
compete with XLA's. `--unroll=1,4` times tlx once per lax.scan unroll (0: the config's, 1).
tokens/s = B L / median step (mt: source tokens).

FLOPs (model FLOPs, analytic; B batch, L length, P projection, H cells, V vocab):
  train = 3 x forward (backward = 2 x forward)
  bilm forward, per token:
      sum over filters (w, n) of 2 (50 - w + 1) w 16 n              (char convolutions)
    + 2 highways x 2 x 2 F^2 + 2 F P                  (F = 256 filters; gate + transform, proj)
    + 2 directions x 2 layers x [2 (P + P) 4H + 2 H P]    (input + recurrent gates, projection)
    + 2 directions x 2 P V                             (tied softmax, all L positions)
  mt forward (S = T = 32, E = Et = 300, H = 300 per direction, Hd = 600, Vt = 8000):
    per source token: 2 directions x [2 (E + H) 4H + 2 (2H + H) 4H]    (encoder layers 1, 2)
                      + 2 x 2H x Hd                                     (attention keys H W1)
    per target token: 2 (Et + Hd + Hd) 4Hd + 2 (Hd + Hd) 4Hd            (decoder layers 1, 2)
                      + 2 x 2 x S x 2H                                  (scores and context)
                      + 2 (2H + Hd) Hd + 2 Hd Vt                        (W2, output layer)
Lookups, gate nonlinearities, softmax, highway gating and the optimizer are not counted.
MFU = model FLOP/s over the float32 matmul peak of JAX's device measured in the same run
(bench_common.peak: jitted N x N jnp.dot, the fastest repeat; torch.mm's is reported alongside),
the denominator of every variant, torch's included.
"""

import argparse
import os

import bench_common as bench
import numpy as np

SETUPS = ("bilm", "mt")
PEERS = ("torch",)
CHARS, CHAR_VOCAB, CHAR_DIM, BOW, EOW = 50, 261, 16, 257, 258  # data_pipelines.chars
BILM = dict(batch=32, seq=64, vocab=10000, lstm=512, proj=128, layers=2, highways=2,
            filters=((1, 16), (2, 16), (3, 32), (4, 64), (5, 128)), dropout=0.1, lr=2e-3,
            clip=1.0)  # fmt: skip
MT = dict(batch=64, seq=32, src_vocab=20000, tgt_vocab=8000, embed=300, tgt_embed=300,
          hidden=300, dec_hidden=600, layers=2, dropout=0.2, lr=1e-3, clip=5.0)  # fmt: skip
BOS, FIRST_WORD = 2, 5  # tlx word vocabularies: [CLS] serves as BOS; ids < 5 are specials
FLOP_DOC = __doc__[__doc__.index("FLOPs (") : __doc__.index("MFU = ")].strip()


def train_flops(setup: str) -> float:
    if setup == "bilm":
        c = BILM
        p, h, f = c["proj"], c["lstm"], sum(n for _, n in c["filters"])
        tok = sum(2 * (CHARS - w + 1) * w * CHAR_DIM * n for w, n in c["filters"])
        tok += c["highways"] * 2 * 2 * f * f + 2 * f * p
        tok += 2 * c["layers"] * (2 * (p + p) * 4 * h + 2 * h * p)
        tok += 2 * 2 * p * c["vocab"]
        return 3.0 * tok * c["batch"] * c["seq"]
    c = MT
    e, h, hd, s = c["embed"], c["hidden"], c["dec_hidden"], c["seq"]
    src = 2 * (2 * (e + h) * 4 * h + 2 * (2 * h + h) * 4 * h) + 2 * 2 * h * hd
    tgt = 2 * (c["tgt_embed"] + 2 * hd) * 4 * hd + 2 * (2 * hd) * 4 * hd
    tgt += 2 * 2 * s * 2 * h + 2 * (2 * h + hd) * hd + 2 * hd * c["tgt_vocab"]
    return 3.0 * (src + tgt) * c["batch"] * s


def synthetic_batch(setup: str, seed: int = 0) -> dict:
    """numpy batch with the keys the setup's input pipeline yields, every row full length."""
    rng = np.random.default_rng(seed)
    if setup == "bilm":
        b, n = BILM["batch"], BILM["seq"]
        chars = np.zeros((b, n, CHARS), np.int32)  # [B, L, 50]: BOW, bytes + 1, EOW, padding 0
        lengths = rng.integers(1, 11, (b, n))
        for i, j in np.ndindex(b, n):
            k = lengths[i, j]
            chars[i, j, : k + 2] = [BOW, *rng.integers(98, 124, k), EOW]  # 'a'..'z' + 1
        return dict(input_ids=rng.integers(FIRST_WORD, BILM["vocab"], (b, n), dtype=np.int32),
                    char_ids=chars, document_ids=np.ones((b, n), np.int32),
                    example_weight=np.ones(b, np.float32))  # fmt: skip
    b, n = MT["batch"], MT["seq"]
    tgt = rng.integers(FIRST_WORD, MT["tgt_vocab"], (b, n + 1), dtype=np.int32)
    tgt[:, 0] = BOS
    ones = np.ones((b, n), np.int32)
    return dict(input_ids=rng.integers(FIRST_WORD, MT["src_vocab"], (b, n), dtype=np.int32),
                input_mask=ones, decoder_input_ids=tgt[:, :-1], decoder_target_ids=tgt[:, 1:],
                decoder_mask=ones, example_weight=np.ones(b, np.float32))  # fmt: skip


def tlx_config(setup: str, unroll: int):
    """The config tlx.train would run, with the benchmark's shapes set."""
    if setup == "bilm":
        from configs.elmo import pretrain

        cfg = pretrain.get_config("size=small")
        cfg.unlock()
        cfg.model.vocab_size = BILM["vocab"]
        assert (cfg.train.batch_size, cfg.data.seq_len) == (BILM["batch"], BILM["seq"])
    else:
        from configs.cove import translate

        cfg = translate.get_config("size=full")
        cfg.unlock()
        cfg.model.embed_dim = MT["embed"]
        cfg.model.vocab_size, cfg.model.tgt_vocab_size = MT["src_vocab"], MT["tgt_vocab"]
        cfg.data.seq_len, cfg.train.batch_size = MT["seq"], MT["batch"]
    if unroll:
        cfg.model.unroll = unroll
    return cfg


def bench_tlx(setup: str, unroll: int, warmup: int, steps: int) -> dict:
    from tlx import partitioning
    from tlx import steps as tlx_steps

    cfg = tlx_config(setup, unroll)
    batch = synthetic_batch(setup)
    built = tlx_steps.build(cfg, batch)
    batch = partitioning.global_batch(batch, built.batch_sharding)  # tlx_step's put: a no-op
    times = bench.time_steps(bench.tlx_step(built, batch), warmup, steps)
    return dict(times_s=times, device=bench.jax_device(), unroll=cfg.model.get("unroll", 1),
                objective=cfg.objective.name, lr=cfg.optim.lr,
                clip=cfg.optim.grad_clip)  # fmt: skip


# ---------------------------------------------------------------------------- PyTorch peers


def torch_bilm():
    import torch
    from torch import nn

    c = BILM

    class BiLM(nn.Module):
        def __init__(self):
            super().__init__()
            f, p = sum(n for _, n in c["filters"]), c["proj"]
            self.chars = nn.Embedding(CHAR_VOCAB, CHAR_DIM)
            self.convs = nn.ModuleList(nn.Conv1d(CHAR_DIM, n, w) for w, n in c["filters"])
            self.highways = nn.ModuleList(nn.Linear(f, 2 * f) for _ in range(c["highways"]))
            for hw in self.highways:
                nn.init.constant_(hw.bias[f:], -2.0)  # gate starts near carry, as tlx's
            self.proj = nn.Linear(f, p)
            self.stacks = nn.ModuleList(
                nn.ModuleList(
                    nn.LSTM(p, c["lstm"], proj_size=p, batch_first=True) for _ in range(c["layers"])
                )
                for _ in range(2)  # forward, backward: separate stacks
            )
            self.drop = nn.Dropout(c["dropout"])
            self.softmax = nn.Linear(p, c["vocab"])  # tied: both directions

        def tokens(self, chars):  # [B, L, C] -> [B, L, P]
            b, n, k = chars.shape
            x = self.chars(chars.reshape(-1, k)).transpose(1, 2)  # [N, d, C]
            h = torch.cat([torch.relu(conv(x).amax(-1)) for conv in self.convs], -1)  # [N, F]
            for hw in self.highways:
                t, g = hw(h).chunk(2, -1)
                g = torch.sigmoid(g)
                h = g * torch.relu(t) + (1 - g) * h
            return self.proj(h).reshape(b, n, -1)

        def stack(self, layers, x):
            for k, lstm in enumerate(layers):
                if k:
                    x = self.drop(x)
                out, _ = lstm(x)
                x = out + x if k else out  # residual into layer 2
            return x

        def forward(self, chars, ids):
            x = self.drop(self.tokens(chars))
            fw = self.stack(self.stacks[0], x)  # [B, L, P]
            bw = self.stack(self.stacks[1], x.flip(1)).flip(1)
            # forward state t predicts t + 1, backward state t predicts t - 1
            h = torch.cat([fw[:, :-1], bw[:, 1:]], 0)  # [2B, L - 1, P]
            targets = torch.cat([ids[:, 1:], ids[:, :-1]], 0)
            logits = self.softmax(self.drop(h))  # [2B, L - 1, V]
            return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    batch = synthetic_batch("bilm")
    return BiLM(), (batch["char_ids"], batch["input_ids"]), c


def torch_mt():
    import torch
    from torch import nn

    c = MT
    h, hd = c["hidden"], c["dec_hidden"]

    class MTLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.src = nn.Embedding(c["src_vocab"], c["embed"])
            self.src.weight.requires_grad_(False)  # frozen GloVe
            self.encoder = nn.LSTM(c["embed"], h, num_layers=c["layers"], bidirectional=True,
                                   batch_first=True, dropout=c["dropout"])  # fmt: skip
            self.tgt = nn.Embedding(c["tgt_vocab"], c["tgt_embed"])
            self.cells = nn.ModuleList(
                nn.LSTMCell(c["tgt_embed"] + hd if k == 0 else hd, hd) for k in range(c["layers"])
            )
            self.attn_in = nn.Linear(hd, 2 * h)  # W1, b1
            self.attn_out = nn.Linear(2 * h + hd, hd)  # W2, b2
            self.drop = nn.Dropout(c["dropout"])
            self.out = nn.Linear(hd, c["tgt_vocab"])

        def forward(self, src, tgt_in, tgt_out):
            states, (hn, cn) = self.encoder(self.src(src))  # [B, S, 2H], [2 layers, B, H]
            # bridge: layer k starts from [fw; bw] of encoder layer k's final states
            pair = lambda s, k: torch.cat([s[2 * k], s[2 * k + 1]], -1)  # [B, 2H]
            carry = [(pair(hn, k), pair(cn, k)) for k in range(len(self.cells))]
            keys = states @ self.attn_in.weight  # [B, S, Hd]: H_s . W1 h = (H_s W1) . h
            key_bias = states @ self.attn_in.bias  # [B, S]
            emb = self.tgt(tgt_in)  # [B, T, Et]
            feed, feeds = states.new_zeros(src.shape[0], hd), []
            for t in range(tgt_in.shape[1]):
                x = torch.cat([emb[:, t], feed], -1)  # input feeding
                for k, cell in enumerate(self.cells):
                    carry[k] = cell(x, carry[k])
                    x = carry[k][0]
                scores = torch.bmm(keys, x.unsqueeze(2)).squeeze(2) + key_bias  # [B, S]
                alpha = scores.softmax(-1)
                context = torch.bmm(alpha.unsqueeze(1), states).squeeze(1)  # [B, 2H]
                feed = torch.tanh(self.attn_out(torch.cat([context, x], -1)))  # h~ [B, Hd]
                feeds.append(feed)
            logits = self.out(self.drop(torch.stack(feeds, 1)))  # [B, T, Vt]
            return nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())

    b = synthetic_batch("mt")
    return MTLSTM(), (b["input_ids"], b["decoder_input_ids"], b["decoder_target_ids"]), c


def bench_torch(setup: str, warmup: int, steps: int) -> dict:
    import torch

    dev = bench.torch_device()
    torch.manual_seed(0)
    model, inputs, c = torch_bilm() if setup == "bilm" else torch_mt()
    model = model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    fused = {"fused": True} if dev == "cuda" else {}
    opt = torch.optim.Adam(params, lr=c["lr"], eps=1e-8, **fused)
    inputs = [torch.from_numpy(x).long().to(dev) for x in inputs]
    step = bench.torch_step(lambda: model(*inputs), opt, params, c["clip"], dev)
    times = bench.time_steps(step, warmup, steps)
    return dict(times_s=times, device=bench.torch_device_name(dev), threads=torch.get_num_threads())


# ---------------------------------------------------------------------------- driver


def run_child(args) -> dict:
    if args.only.startswith("peak_"):
        return bench.peak(args.only[5:], args.peak_n, args.peak_repeats)
    setup, variant = args.only.split(":")
    common = dict(warmup=args.warmup, steps=args.steps)
    try:
        if variant == "tlx":
            r = bench_tlx(setup, int(args.unroll), **common)
        else:
            r = bench_torch(setup, **common)
    except ImportError as e:  # a machine may lack torch
        r = bench.unavailable(e)
    return dict(variant=variant, setup=setup, **r)


def _fmt(x, spec: str) -> str:
    return format(x, spec) if x is not None else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="bilm,mt", help="setups: bilm, mt")
    bench.add_step_flags(ap)
    ap.add_argument(
        "--unroll", default="0", help="tlx lax.scan unrolls, comma-separated; 0: config's"
    )
    ap.add_argument("--peers", default="torch")
    bench.add_run_flags(ap, out="runs/bench_recurrent.json")
    args = ap.parse_args(argv)
    if args.only:
        bench.emit(run_child(args))
        return
    setups = bench.names("variants", args.variants, SETUPS)
    peers = bench.names("peers", args.peers, PEERS)
    unrolls = [int(u) for u in args.unroll.split(",") if u]
    flags = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--peak_n={args.peak_n}",
             f"--peak_repeats={args.peak_repeats}"]  # fmt: skip
    spawn = lambda only, unroll=0: bench.spawn(
        __file__, only, [*flags, f"--unroll={unroll}"], label=f"unroll={unroll}" if unroll else ""
    )

    load_before = os.getloadavg()  # other jobs on a shared machine skew every number
    peak_j = spawn("peak_jax")
    peak_t = spawn("peak_torch") if peers else {}
    peak_gflops = peak_j.get("gflops", float("nan"))
    print(f"float32 matmul peak: jax {peak_gflops:.1f} GFLOP/s on {peak_j.get('device')}, "
          f"torch {peak_t.get('gflops', float('nan')):.1f} GFLOP/s (MFU uses jax)")  # fmt: skip
    results = []
    for setup in setups:
        c = BILM if setup == "bilm" else MT
        runs = [(f"{setup}:tlx", u) for u in unrolls] + [(f"{setup}:{p}", 0) for p in peers]
        for only, unroll in runs:
            r = spawn(only, unroll)
            r.update(setup=setup, variant=only.split(":")[1], batch=c["batch"], seq=c["seq"],
                     train_flops=train_flops(setup))  # fmt: skip
            bench.summarise(r, c["batch"] * c["seq"], peak_gflops)
            results.append(r)
            if "median_step_s" in r:
                print(f"  {only} unroll={r.get('unroll', '-')}: {r['median_step_s'] * 1e3:.0f} ms"
                      f" a step, {r['tokens_per_s']:.0f} tokens/s", flush=True)  # fmt: skip

    rows, ratios = [], {}
    print("\n| setup | tlx unroll | tlx tokens/s | torch tokens/s | ratio | tlx MFU | torch MFU |")
    print("|---|---|---|---|---|---|---|")
    for setup in setups:
        done = [r for r in results if r["setup"] == setup and "median_step_s" in r]
        peer = next((r for r in done if r["variant"] == "torch"), {})
        for r in [r for r in done if r["variant"] == "tlx"] or [{}]:
            ratio = r["tokens_per_s"] / peer["tokens_per_s"] if r and peer else None
            if ratio is not None:
                ratios[f"{setup}/tlx_unroll{r['unroll']}_vs_torch"] = ratio
            cells = [setup, r.get("unroll", "-"), _fmt(r.get("tokens_per_s"), ",.0f"),
                     _fmt(peer.get("tokens_per_s"), ",.0f"), _fmt(ratio, ".2f"),
                     _fmt(r.get("mfu"), ".2%"), _fmt(peer.get("mfu"), ".2%")]  # fmt: skip
            rows.append("| " + " | ".join(map(str, cells)) + " |")
    print("\n".join(rows))
    failed = [f"{r['setup']}:{r['variant']}" for r in results if "median_step_s" not in r]
    if failed:
        print(f"failed or unavailable: {failed}")
    meta = dict(bench.machine(), peak_gflops_jax=peak_gflops, peak_jax=peak_j,
                peak_torch=peak_t or None, steps=args.steps, warmup=args.warmup,
                unrolls=unrolls, load_before=load_before, load_after=os.getloadavg(),
                flop_formula=FLOP_DOC,
                devices=sorted({r["device"] for r in results if "device" in r}))  # fmt: skip
    load = f"{load_before[0]:.2f} -> {meta['load_after'][0]:.2f}"
    print(f"\n{meta['cpu']} ({meta['cores']} cores, 1-min load {load}); "
          f"devices {meta['devices']}; versions {meta['versions']}")  # fmt: skip
    bench.save_results(args.out, meta, results, ratios)


if __name__ == "__main__":
    main()
