r"""GPT causal-LM train-step benchmark: tlx vs HF PyTorch vs HF Flax (CPU or GPU).

  python launch/benchmark_gpt.py [--sizes=mini,small] [--steps=10] [--warmup=2] \
      [--peers=torch,flax] [--dtype=float32|bfloat16] [--xent_chunk=0] [--out=bench_gpt.json]

Setups: mini (L4 H256 A4 I1024) seq 128 batch 32 and GPT-2 small (L12 H768 A12 I3072) seq 128
batch 8, vocab 50257, 1024 positions, synthetic token batches (one document per row). Variants:
  tlx          tlx GptForCausalLM (gpt2) + objectives.causal_lm as configs/gpt/pretrain.py runs
               it (xent_chunk=0): logits materialised as [B, L, V] float32, then cross-entropy
  tlx_fused    the same model with the fused tied_xent (xent_chunk > 0), which scans chunks of
               positions and never holds [B, L, V] logits (--xent_chunk positions a chunk;
               0 keeps objectives.XENT_CHUNK = 32)
  torch        HF transformers GPT2LMHeadModel (PyTorch, labels=input_ids, shifted inside)
  flax         HF transformers FlaxGPT2LMHeadModel (jitted step, donated state; transformers < 5)
Every variant computes logits for all L positions and scores L - 1 targets per row (tlx's
next_token_targets gives the last position weight 0), and times a full train step: forward,
backward, AdamW (lr 1e-4, weight decay 0.01 on every parameter) after clipping to global norm 1,
dropout 0.1 on embeddings, attention probabilities and residual branches. After `--warmup`
steps, `--steps` steps are timed one by one (blocking on the results) and the median is reported.
Each variant runs in its own child process (`--only=...`) so that torch / OpenBLAS threads never
compete with XLA's, and a peer that cannot be imported (no torch; transformers 5 has no Flax
models) is reported as `unavailable: <reason>`. JAX variants run on JAX's default device, torch
on CUDA when it sees a GPU (with fused AdamW there, as HF's Trainer picks). `--dtype=bfloat16`:
tlx and flax compute in bf16 with fp32 params, torch runs forward and loss under
autocast(bfloat16), and MFU divides by the bf16 matmul peak.

FLOPs (model FLOPs, analytic; D hidden, I intermediate, N layers, V vocab, B batch, L seq len):
  train = 3 x forward (backward = 2 x forward)
  forward = 2 x (4 D^2 + 2 D I) x N x B L          (QKV + output projection + MLP per token)
          + 2 x 2 x L^2 x D x N x B                (attention scores QK^T and context AV, the
                                                    full L x L: the causal mask saves nothing)
          + 2 x D x V x B L                        (tied output projection, all L positions)
Embedding lookups, softmax, LayerNorm, GELU, the cross-entropy and the optimizer are not counted.
MFU = model FLOP/s over the matmul peak of the dtype in use measured in the same run (jitted
jnp.dot of two N x N matrices on JAX's device, N = 2048 on CPU and 8192 on GPU, the fastest of
the repeats); torch.mm's peak on torch's device is measured and reported too, but the JAX one is the
denominator for every variant. On GPU both libraries keep their default float32 matmul precision
(XLA may use TF32, torch does not), so compare float32 GPU numbers with that in mind.
"""

import argparse

import bench_common as bench
import numpy as np

SETUPS = {"mini": dict(seq=128, batch=32), "small": dict(seq=128, batch=8)}
SIZES = {"mini": (4, 256, 4, 1024), "small": (12, 768, 12, 3072)}  # = tlx.models.gpt.SIZES
VOCAB, MAX_POSITION = 50257, 1024
LR, WD, EPS, CLIP = 1e-4, 0.01, 1e-8, 1.0
VARIANTS = ("tlx", "tlx_fused")
PEERS = ("torch", "flax")
FLOP_DOC = __doc__[__doc__.index("FLOPs (") : __doc__.index("MFU = ")].strip()


def train_flops(size: str, batch: int, seq: int) -> float:
    n, d, _, inter = SIZES[size]
    tokens = batch * seq
    fwd = 2 * (4 * d * d + 2 * d * inter) * n * tokens
    fwd += 2 * 2 * seq * seq * d * n * batch
    fwd += 2 * d * VOCAB * tokens
    return 3.0 * fwd


def synthetic_batch(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    """[B, L] int32 token ids, uniform over the vocabulary."""
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, seq), dtype=np.int32)


def time_jax(loss_fn, params, batch: dict, warmup: int, steps: int) -> list:
    """bench_common.time_jax with this benchmark's AdamW and clipping."""
    return bench.time_jax(loss_fn, params, batch, warmup, steps, lr=LR, eps=EPS, wd=WD, clip=CLIP)


def bench_tlx(size: str, ids, fused: bool, dtype: str, chunk: int, warmup: int, steps: int):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from tlx import objectives
    from tlx.models import gpt  # jax, flax and optax only: runs on GPU images

    assert gpt.SIZES[size] == SIZES[size], (gpt.SIZES[size], SIZES[size])
    model = gpt.GptForCausalLM(gpt.config_for_size(size, "gpt2", dtype=dtype))
    batch = {"input_ids": jnp.asarray(ids)}  # one document per row: no document_ids
    chunk = (chunk or objectives.XENT_CHUNK) if fused else 0
    lm_loss = objectives.get("causal_lm", xent_chunk=chunk)  # 0: materialised [B, L, V] logits

    def loss_fn(params, rng, batch):
        outputs, _ = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
        return lm_loss(outputs, batch)[0]

    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
    times = time_jax(loss_fn, params, batch, warmup, steps)
    return dict(times_s=times, device=bench.jax_device(), xent_chunk=chunk if fused else None)


def hf_config(size: str):
    from transformers import GPT2Config

    n, d, heads, inter = SIZES[size]
    return GPT2Config(vocab_size=VOCAB, n_positions=MAX_POSITION, n_embd=d, n_layer=n,
                      n_head=heads, n_inner=inter, activation_function="gelu_new",
                      resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5,
                      use_cache=False)  # fmt: skip


def bench_torch(size: str, ids, dtype: str, warmup: int, steps: int):
    import torch
    from transformers import GPT2LMHeadModel

    dev = bench.torch_device()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(hf_config(size)).to(dev).train()
    fused = {"fused": True} if dev == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS, **fused)
    inputs = torch.from_numpy(ids).long().to(dev)
    loss = lambda: model(input_ids=inputs, labels=inputs).loss  # shifts: L - 1 targets a row
    step = bench.torch_step(loss, opt, list(model.parameters()), CLIP, dev, dtype == "bfloat16")
    times = bench.time_steps(step, warmup, steps)
    attn = getattr(model.config, "_attn_implementation", None)
    return dict(times_s=times, device=bench.torch_device_name(dev), attn_implementation=attn)


def bench_flax(size: str, ids, dtype: str, warmup: int, steps: int):
    import jax.numpy as jnp
    import optax
    from transformers import FlaxGPT2LMHeadModel

    model = FlaxGPT2LMHeadModel(hf_config(size), seed=0, dtype=jnp.dtype(dtype))

    def loss_fn(params, rng, batch):
        ids = batch["input_ids"]
        logits = model(ids, params=params, dropout_rng=rng, train=True).logits  # [B, L, V]
        # HF's run_clm_flax: position t predicts token t + 1
        xent = optax.softmax_cross_entropy_with_integer_labels(
            logits[:, :-1].astype(jnp.float32), ids[:, 1:]
        )
        return xent.mean()

    times = time_jax(loss_fn, model.params, {"input_ids": ids}, warmup, steps)
    return dict(times_s=times, device=bench.jax_device())


def run_child(args) -> dict:
    """--only mode: one measurement (or why it could not be made) as one dict."""
    if args.only.startswith("peak_"):
        return bench.peak(args.only[5:], args.peak_n, args.peak_repeats, args.dtype)
    size = args.sizes
    ids = synthetic_batch(SETUPS[size]["batch"], SETUPS[size]["seq"])
    common = dict(dtype=args.dtype, warmup=args.warmup, steps=args.steps)
    try:
        if args.only in VARIANTS:
            r = bench_tlx(size, ids, args.only == "tlx_fused", chunk=args.xent_chunk, **common)
        elif args.only == "torch":
            r = bench_torch(size, ids, **common)
        else:
            r = bench_flax(size, ids, **common)
    except ImportError as e:  # transformers 5 has no Flax models; a machine may lack torch
        r = bench.unavailable(e)
    return dict(variant=args.only, size=size, dtype=args.dtype, **r)


def child_env(only: str) -> dict:
    """Keeps transformers from importing the framework a child does not time."""
    return (
        {"USE_FLAX": "0", "USE_JAX": "0"} if only in ("torch", "peak_torch") else {"USE_TORCH": "0"}
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="mini,small")
    bench.add_step_flags(ap)
    ap.add_argument("--peers", default="torch,flax")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    chunk_help = "positions per chunk of tlx's fused loss; 0: objectives.XENT_CHUNK"
    ap.add_argument("--xent_chunk", type=int, default=0, help=chunk_help)
    bench.add_run_flags(ap)
    args = ap.parse_args(argv)
    if args.only:
        bench.emit(run_child(args))
        return
    sizes = bench.names("sizes", args.sizes, SETUPS)
    peers = bench.names("peers", args.peers, PEERS)
    flags = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--dtype={args.dtype}",
             f"--xent_chunk={args.xent_chunk}", f"--peak_n={args.peak_n}",
             f"--peak_repeats={args.peak_repeats}"]  # fmt: skip
    spawn = lambda only, size="": bench.spawn(
        __file__, only, [f"--sizes={size}", *flags], child_env(only), label=size
    )

    peak_j = spawn("peak_jax")
    peak_t = spawn("peak_torch") if "torch" in peers else {}
    peak_gflops = peak_j.get("gflops", float("nan"))
    print(f"{args.dtype} matmul peak: jax {peak_gflops:.1f} GFLOP/s on {peak_j.get('device')}, "
          f"torch {peak_t.get('gflops', float('nan')):.1f} GFLOP/s on {peak_t.get('device')} "
          f"(MFU uses jax)")  # fmt: skip
    results = []
    for size in sizes:
        b, seq = SETUPS[size]["batch"], SETUPS[size]["seq"]
        for variant in [*VARIANTS, *peers]:
            r = spawn(variant, size)
            r.update(size=size, batch=b, seq=seq, targets_per_row=seq - 1,
                     train_flops=train_flops(size, b, seq))  # fmt: skip
            bench.summarise(r, b * seq, peak_gflops)
            results.append(r)

    print(f"\n{'size':5} {'variant':11} {'step ms':>9} {'tokens/s':>9} {'TFLOP/s':>8} {'MFU':>6}")
    for r in results:
        head = f"{r['size']:5} {r['variant']:11}"
        if "median_step_s" in r:
            print(f"{head} {r['median_step_s'] * 1e3:9.1f} {r['tokens_per_s']:9.0f} "
                  f"{r['tflops']:8.4f} {r['mfu']:6.1%}  {r['device']}")  # fmt: skip
        else:
            print(
                f"{head} {'unavailable: ' + r['unavailable'] if 'unavailable' in r else 'failed'}"
            )
    ratios = {}
    for size in sizes:
        by, best = bench.fastest_peer(results, size, peers)
        pairs = [(v, best) for v in VARIANTS if best] + [("tlx_fused", "tlx")]
        for v, base in pairs:
            if v in by and base in by:
                ratio = by[base]["median_step_s"] / by[v]["median_step_s"]
                ratios[f"{size}/{v}_vs_{base}"] = ratio
                print(f"{size}: {v} speedup over {base}: {ratio:.2f}x (tokens/s ratio)")
    meta = dict(bench.machine(), dtype=args.dtype, peak_gflops_jax=peak_gflops,
                peak_jax=peak_j, peak_torch=peak_t or None, steps=args.steps,
                warmup=args.warmup, xent_chunk_flag=args.xent_chunk,
                devices=sorted({r["device"] for r in results if "device" in r}),
                flop_formula=FLOP_DOC)  # fmt: skip
    print(f"\n{meta['cpu']} ({meta['cores']} cores); devices {meta['devices']}; "
          f"versions {meta['versions']}")  # fmt: skip
    bench.save_results(args.out, meta, results, ratios)


if __name__ == "__main__":
    main()
