r"""BERT pretraining train-step benchmark: tlx vs HF PyTorch vs HF Flax (CPU or accelerator).

  python launch/benchmark_bert.py [--sizes=mini,base] [--steps=10] [--warmup=2] \
      [--peers=torch,flax] [--out=bench.json]

Setups: BERT-mini (L4 H256 A4 I1024) seq 128 batch 32 and BERT-base (L12 H768 A12 I3072) seq 128
batch 8, vocab 30522, synthetic batches (P = 20 masked positions for seq 128). Variants:
  tlx      tlx recipe of google-research/bert: MLM head scores only the P masked positions
  tlx_all  tlx with cfg.model.mlm_all_positions=True: MLM head scores all L positions (as HF)
  torch    HF transformers BertForPreTraining (PyTorch, labels -100 off the masked positions)
  flax     HF transformers FlaxBertForPreTraining (jitted fwd+bwd+update, donated state)
Every variant times a full train step (forward, backward, AdamW update with clipping to global
norm 1), dropout 0.1 on. After `--warmup` steps, `--steps` steps are timed one by one (blocking on
the results) and the median is reported. Each variant runs in its own child process (`--only=...`)
so that torch / OpenBLAS threads never compete with XLA's.

FLOPs (model FLOPs, analytic; D hidden, I intermediate, N layers, V vocab, B batch, L seq len):
  train = 3 x forward (backward = 2 x forward)
  forward = 2 x (4 D^2 + 2 D I) x N x B L          (QKV + output projection + MLP per token)
          + 2 x 2 x L^2 x D x N x B                (attention scores QK^T and context AV)
          + (2 D^2 + 2 D V) x S                    (MLM transform + tied decoder, S scored rows)
          + (2 D^2 + 2 x 2 D) x B                  (pooler + NSP classifier)
  S = B x P for `tlx` (masked positions only) and B x L for `tlx_all`, `torch` and `flax`.
Embedding lookups, softmax, LayerNorm, GELU and the optimizer are not counted. MFU = model FLOP/s
over the fp32 matmul peak measured in the same run (jitted jnp.dot of two N x N float32 matrices,
the fastest of the repeats); torch.mm's peak is measured and reported too, but the JAX one is the
denominator for every variant.
"""

import argparse
import importlib.util
import os

import bench_common as bench
import numpy as np

SETUPS = {"mini": dict(seq=128, batch=32), "base": dict(seq=128, batch=8)}
SIZES = {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "small": (4, 512, 8, 2048),
         "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}  # fmt: skip
VOCAB = 30522
LR, WD, EPS, CLIP = 1e-4, 0.01, 1e-6, 1.0
FLOP_DOC = __doc__[__doc__.index("FLOPs (") : __doc__.index("MFU = ")].strip()


def num_predictions(seq: int) -> int:
    return 20 if seq == 128 else max(1, round(0.15 * seq))


def train_flops(size: str, batch: int, seq: int, scored_per_seq: int) -> float:
    n, d, _, inter = SIZES[size]
    tokens = batch * seq
    fwd = 2 * (4 * d * d + 2 * d * inter) * n * tokens
    fwd += 2 * 2 * seq * seq * d * n * batch
    fwd += (2 * d * d + 2 * d * VOCAB) * scored_per_seq * batch
    fwd += (2 * d * d + 2 * 2 * d) * batch
    return 3.0 * fwd


def synthetic_batch(batch: int, seq: int, seed: int = 0) -> dict:
    """[CLS] A [SEP] B [SEP], ids from the wordpiece range, P distinct [MASK]ed positions."""
    rng = np.random.default_rng(seed)
    p = num_predictions(seq)
    ids = rng.integers(1996, VOCAB, (batch, seq), dtype=np.int32)
    mid = seq // 2
    ids[:, 0], ids[:, mid - 1], ids[:, -1] = 101, 102, 102
    segment = np.zeros((batch, seq), np.int32)
    segment[:, mid:] = 1
    candidates = np.setdiff1d(np.arange(1, seq - 1), [mid - 1])
    positions = np.stack([np.sort(rng.choice(candidates, p, replace=False)) for _ in range(batch)])
    rows = np.arange(batch)[:, None]
    labels = ids[rows, positions].astype(np.int32)
    ids[rows, positions] = 103  # [MASK]
    return dict(input_ids=ids, input_mask=np.ones_like(ids), segment_ids=segment,
                masked_lm_positions=positions.astype(np.int32), masked_lm_ids=labels,
                masked_lm_weights=np.ones((batch, p), np.float32),
                next_sentence_labels=rng.integers(0, 2, (batch,), dtype=np.int32),
                example_weight=np.ones((batch,), np.float32))  # fmt: skip


def bench_tlx(size: str, batch: dict, all_positions: bool, warmup: int, steps: int) -> list:
    from configs.bert import pretrain
    from tlx import steps as tlx_steps

    cfg = pretrain.get_config(f"size={size}")
    cfg.unlock()
    cfg.train.batch_size, cfg.data.seq_len = batch["input_ids"].shape
    cfg.model.mlm_all_positions = all_positions
    cfg.optim.lr, cfg.optim.warmup_fraction, cfg.train.steps = LR, 0.0, 1_000_000
    return bench.time_steps(bench.tlx_step(tlx_steps.build(cfg, batch), batch), warmup, steps)


def hf_config(size: str):
    from transformers import BertConfig

    n, d, heads, inter = SIZES[size]
    return BertConfig(vocab_size=VOCAB, hidden_size=d, num_hidden_layers=n,
                      num_attention_heads=heads, intermediate_size=inter,
                      hidden_act="gelu_new", layer_norm_eps=1e-12)  # fmt: skip


def mlm_labels(batch: dict) -> np.ndarray:
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    rows = np.arange(labels.shape[0])[:, None]
    labels[rows, batch["masked_lm_positions"]] = batch["masked_lm_ids"]
    return labels


def bench_torch(size: str, batch: dict, warmup: int, steps: int) -> list:
    import torch
    from transformers import BertForPreTraining

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = BertForPreTraining(hf_config(size)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS)
    names = dict(input_ids="input_ids", attention_mask="input_mask", token_type_ids="segment_ids",
                 next_sentence_label="next_sentence_labels")  # fmt: skip
    inputs = {k: torch.from_numpy(batch[v]).long() for k, v in names.items()}
    inputs["labels"] = torch.from_numpy(mlm_labels(batch))
    step = bench.torch_step(
        lambda: model(**inputs).loss, opt, list(model.parameters()), CLIP, "cpu"
    )
    return bench.time_steps(step, warmup, steps)


def bench_flax(size: str, batch: dict, warmup: int, steps: int) -> list:
    import jax.numpy as jnp
    import optax
    from transformers import FlaxBertForPreTraining

    model = FlaxBertForPreTraining(hf_config(size), seed=0, dtype=jnp.float32)
    labels = mlm_labels(batch)
    b = dict(ids=batch["input_ids"], mask=batch["input_mask"], seg=batch["segment_ids"],
             labels=np.maximum(labels, 0).astype(np.int32), weights=(labels >= 0) * 1.0,
             nsp=batch["next_sentence_labels"])  # fmt: skip

    def loss_fn(params, rng, b):
        out = model(b["ids"], b["mask"], b["seg"], params=params, dropout_rng=rng, train=True)
        xent = optax.softmax_cross_entropy_with_integer_labels(out.prediction_logits, b["labels"])
        mlm = (xent * b["weights"]).sum() / b["weights"].sum()
        nsp = optax.softmax_cross_entropy_with_integer_labels(out.seq_relationship_logits, b["nsp"])
        return mlm + nsp.mean()

    return bench.time_jax(loss_fn, model.params, b, warmup, steps, lr=LR, eps=EPS, wd=WD, clip=CLIP)


def run_child(args) -> dict:
    """--only mode: one measurement, printed as one JSON line."""
    if args.only.startswith("peak_"):
        return bench.peak(args.only[5:], args.peak_n, args.peak_repeats)
    size = args.sizes
    batch = synthetic_batch(SETUPS[size]["batch"], SETUPS[size]["seq"])
    if args.only in ("tlx", "tlx_all"):
        times = bench_tlx(size, batch, args.only == "tlx_all", args.warmup, args.steps)
    elif args.only == "torch":
        times = bench_torch(size, batch, args.warmup, args.steps)
    else:
        times = bench_flax(size, batch, args.warmup, args.steps)
    return dict(variant=args.only, size=size, times_s=times)


def spawn(args, only: str, size: str = "") -> dict:
    flags = [f"--sizes={size}", f"--steps={args.steps}", f"--warmup={args.warmup}",
             f"--peak_n={args.peak_n}", f"--peak_repeats={args.peak_repeats}"]  # fmt: skip
    env = {"USE_FLAX": "0", "USE_JAX": "0"} if only == "torch" else {"USE_TORCH": "0"}
    r = bench.spawn(__file__, only, flags, env, label=size)
    return dict(r, size=size) if "error" in r else r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="mini,base")
    bench.add_step_flags(ap)
    ap.add_argument("--peers", default="torch,flax")
    bench.add_run_flags(ap, peak_n=2048)
    args = ap.parse_args(argv)
    if args.only:
        bench.emit(run_child(args))
        return
    peers = [p for p in args.peers.split(",") if p in ("torch", "flax")]
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing and peers:
        keep = [p for p in peers if p == "flax" and "transformers" not in missing]
        skipped = sorted(set(peers) - set(keep))
        print(f"{missing} not importable: skipping peers {skipped} (pip install -e '.[peers]')")
        peers = keep
    sizes = bench.names("sizes", args.sizes, SETUPS)

    peak_gflops = spawn(args, "peak_jax").get("gflops", float("nan"))
    peak_t = spawn(args, "peak_torch") if "torch" in peers else {}
    print(f"fp32 matmul peak ({args.peak_n}^2): jax {peak_gflops:.1f} GFLOP/s, "
          f"torch {peak_t.get('gflops', float('nan')):.1f} GFLOP/s (MFU uses jax)")  # fmt: skip
    results = []
    for size in sizes:
        b, seq = SETUPS[size]["batch"], SETUPS[size]["seq"]
        for variant in ["tlx", "tlx_all", *peers]:
            r = spawn(args, variant, size)
            r.update(batch=b, seq=seq)
            r["scored_mlm_positions"] = num_predictions(seq) if variant == "tlx" else seq
            r["train_flops"] = train_flops(size, b, seq, r["scored_mlm_positions"])
            bench.summarise(r, b * seq, peak_gflops)
            results.append(r)

    print(f"\n{'size':5} {'variant':8} {'step ms':>9} {'tokens/s':>9} {'TFLOP/s':>8} {'MFU':>6}")
    for r in results:
        if "median_step_s" in r:
            print(f"{r['size']:5} {r['variant']:8} {r['median_step_s'] * 1e3:9.1f} "
                  f"{r['tokens_per_s']:9.0f} {r['tflops']:8.4f} {r['mfu']:6.1%}")  # fmt: skip
        else:
            print(f"{r['size']:5} {r['variant']:8} failed")
    ratios = {}
    for size in sizes:
        by, best = bench.fastest_peer(results, size, peers)
        for v in ("tlx", "tlx_all") if best else ():
            if v in by:
                ratio = by[best]["median_step_s"] / by[v]["median_step_s"]
                ratios[f"{size}/{v}_vs_{best}"] = ratio
                print(f"{size}: {v} speedup over best peer ({best}): {ratio:.2f}x (tokens/s ratio)")
    meta = dict(bench.machine(), peak_gflops_jax=peak_gflops,
                peak_gflops_torch=peak_t.get("gflops"), peak_matmul_n=args.peak_n,
                steps=args.steps, warmup=args.warmup,
                flop_formula=FLOP_DOC)  # fmt: skip
    print(f"\n{meta['cpu']} ({meta['cores']} cores); versions {meta['versions']}")
    bench.save_results(args.out, meta, results, ratios)


if __name__ == "__main__":
    main()
