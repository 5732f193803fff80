r"""The GPU benchmark of issue 17, one run: bf16 matmul peak, BERT-base seq 512 and GPT-2 small
seq 1024 tlx train steps vs HF PyTorch on identical shapes, MFU, word2vec vs gensim on the CPUs.

  bash launch/gpu_bench.sh [FLAGS]           on the lent GPU machine (writes $OUT)
  python launch/gpu_bench.py --tiny --out=runs/gpu_bench_tiny    dry run on CPU, tiny shapes

Stages (each in its own child process, so JAX's and torch's allocators never share the GPU, a
crash or out-of-memory costs only its own row, and each has a time limit):
  peak_jax / peak_torch  bf16 N x N matmul (N = 8192; 256 with --tiny), fastest of the repeats
  bert_tlx    configs/bert/pretrain.py size=base through tlx.steps.build (the loop's own step):
              model.dtype=bfloat16, model.attention_impl, model.remat and train.microbatches
              from the flags; synthetic batches (launch/benchmark_bert.py), mlm_all_positions
              so the MLM head scores all L positions, as HF's does
  bert_torch  HF BertForPreTraining, sdpa attention, forward + loss under autocast(bfloat16),
              fused AdamW, clip to global norm 1
  gpt_tlx     configs/gpt/pretrain.py size=small (GPT-2 124M, vocab 50257, 1024 positions) the
              same way, objective.xent_chunk from --gpt_xent_chunk
  gpt_torch   HF GPT2LMHeadModel, as bert_torch
  word2vec    launch/benchmark_embeddings.py --variants=sg (tlx vs gensim, same run, device CPUs)
Both sides use the same dropout: 0.1 on hidden states, --attn_dropout (default 0: cuDNN's flash
attention here has no dropout, and HF's sdpa then runs its flash kernel too) on the
probabilities. FLOPs and MFU: the analytic model FLOPs of benchmark_bert.py / benchmark_gpt.py
over the median step time, divided by the bf16 jnp.dot peak measured in this run.
Writes gpu_bench.json and gpu_bench.md to --out and prints the table last.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import bench_common as bench
import benchmark_bert
import benchmark_gpt
import numpy as np

# [model, size, seq, batch] at full scale and with --tiny (mini sizes: their FLOP formulas exist)
SHAPES = {
    "full": {"bert": ("base", 512, 128), "gpt": ("small", 1024, 32), "peak_n": 8192},
    "tiny": {"bert": ("mini", 32, 2), "gpt": ("mini", 32, 2), "peak_n": 256},
}
STAGES = ("peak_jax", "peak_torch", "bert_tlx", "bert_torch", "gpt_tlx", "gpt_torch", "word2vec")
LR, CLIP = 1e-4, 1.0


def shapes(args) -> dict:
    s = dict(SHAPES["tiny" if args.tiny else "full"])
    size, seq, batch = s["bert"]
    s["bert"] = (size, seq, args.bert_batch or batch)
    size, seq, batch = s["gpt"]
    s["gpt"] = (size, seq, args.gpt_batch or batch)
    return s


# ---------------------------------------------------------------- children: tlx


def _import_steps():
    """tlx.steps imports data_pipelines (SeqIO, TensorFlow) for its task helpers, which these
    synthetic batches never call; the GPU image has no TensorFlow and its wheel is far over the
    device tool's 64 MiB carry limit, so a stand-in module takes its place there (any use of
    it fails loudly)."""
    try:
        import data_pipelines  # noqa: F401
    except ImportError as e:
        import types

        why = str(e)

        def missing(name):
            raise ImportError(f"data_pipelines.{name}: not importable here ({why})")

        stub = types.ModuleType("data_pipelines")
        stub.__getattr__ = missing
        sys.modules["data_pipelines"] = stub
    from tlx import steps

    return steps


def _override(cfg, key: str, value, missing: list):
    """cfg[key] = value where the config has that key; a missing key is recorded, not added
    (the feature it names is not in this checkout)."""
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    if leaf in node:
        node[leaf] = value
    else:
        missing.append(key)


def bench_tlx(model: str, args) -> dict:
    size, seq, batch = shapes(args)[model]
    if model == "bert":
        from configs.bert import pretrain

        cfg = pretrain.get_config(f"size={size}")
        data = benchmark_bert.synthetic_batch(batch, seq)
    else:
        from configs.gpt import pretrain

        cfg = pretrain.get_config(f"size={size}")
        ids = benchmark_gpt.synthetic_batch(batch, seq)
        data = dict(input_ids=ids, input_mask=np.ones_like(ids))
    steps = _import_steps()
    cfg.unlock()
    missing = []
    cfg.train.batch_size, cfg.data.seq_len = batch, seq
    cfg.optim.lr, cfg.optim.warmup_fraction, cfg.train.steps = LR, 0.0, 1_000_000
    cfg.model.attention_dropout_rate = args.attn_dropout
    if model == "bert":
        cfg.model.mlm_all_positions = True
    else:
        cfg.model.vocab_size = benchmark_gpt.VOCAB
        cfg.model.max_position = benchmark_gpt.MAX_POSITION
        cfg.objective.xent_chunk = args.gpt_xent_chunk
    for key, value in (("model.dtype", args.dtype), ("model.remat", args.remat),
                       ("model.attention_impl", _impl(args)),
                       ("train.microbatches", args.microbatches)):  # fmt: skip
        _override(cfg, key, value, missing)
    step = bench.tlx_step(steps.build(cfg, data), data)
    t0 = time.perf_counter()
    step()  # compiles
    compile_s = time.perf_counter() - t0
    times = bench.time_steps(step, args.warmup, args.steps)
    config = {k: cfg.model.get(k) for k in ("dtype", "remat", "attention_impl")}
    config["microbatches"] = cfg.train.get("microbatches")
    return dict(times_s=times, compile_s=compile_s, device=bench.jax_device(), config=config,
                missing_config_keys=missing)  # fmt: skip


def _impl(args) -> str:
    if args.attention_impl != "auto":
        return args.attention_impl
    on_gpu = importlib.util.find_spec("jax") and _jax_backend() == "gpu"
    return "cudnn" if on_gpu and args.dtype == "bfloat16" and args.attn_dropout == 0 else "xla"


def _jax_backend() -> str:
    import jax

    return jax.default_backend()


# ---------------------------------------------------------------- children: HF PyTorch


def _hf_model(model: str, size: str, args):
    """The HF model with sdpa attention and the same dropout as tlx."""
    if model == "bert":
        from transformers import BertConfig, BertForPreTraining

        n, d, heads, inter = benchmark_bert.SIZES[size]
        config = BertConfig(vocab_size=benchmark_bert.VOCAB, hidden_size=d, num_hidden_layers=n,
                            num_attention_heads=heads, intermediate_size=inter,
                            hidden_act="gelu_new", layer_norm_eps=1e-12,
                            attention_probs_dropout_prob=args.attn_dropout)  # fmt: skip
        cls = BertForPreTraining
    else:
        from transformers import GPT2LMHeadModel

        config = benchmark_gpt.hf_config(size)
        config.attn_pdrop = args.attn_dropout
        cls = GPT2LMHeadModel
    try:
        return cls._from_config(config, attn_implementation="sdpa")
    except (TypeError, ValueError, AttributeError):  # a transformers without that keyword
        config._attn_implementation = "sdpa"
        return cls(config)


def bench_torch(model: str, args) -> dict:
    import torch

    size, seq, batch = shapes(args)[model]
    dev = bench.torch_device()
    torch.manual_seed(0)
    net = _hf_model(model, size, args).to(dev).train()
    fused = {"fused": True} if dev == "cuda" else {}
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.01, **fused)
    if model == "bert":
        data = benchmark_bert.synthetic_batch(batch, seq)
        names = dict(input_ids="input_ids", attention_mask="input_mask",
                     token_type_ids="segment_ids",
                     next_sentence_label="next_sentence_labels")  # fmt: skip
        inputs = {k: torch.from_numpy(data[v]).long().to(dev) for k, v in names.items()}
        inputs["labels"] = torch.from_numpy(benchmark_bert.mlm_labels(data)).to(dev)
    else:
        ids = torch.from_numpy(benchmark_gpt.synthetic_batch(batch, seq)).long().to(dev)
        inputs = dict(input_ids=ids, labels=ids)
    bf16 = args.dtype == "bfloat16"
    step = bench.torch_step(
        lambda: net(**inputs).loss, opt, list(net.parameters()), CLIP, dev, bf16
    )
    times = bench.time_steps(step, args.warmup, args.steps)
    attn = getattr(net.config, "_attn_implementation", None)
    return dict(times_s=times, device=bench.torch_device_name(dev), attn_implementation=attn)


# ---------------------------------------------------------------- children: word2vec


def bench_word2vec(args, out_dir: str) -> dict:
    """launch/benchmark_embeddings.py's sg pair (tlx and gensim in one run) on this machine's
    CPUs (JAX_PLATFORMS=cpu); what it needs is checked first so a missing piece is a reason."""
    need = [m for m in ("tensorflow", "seqio", "gensim") if importlib.util.find_spec(m) is None]
    if need:
        return dict(unavailable=f"not importable here: {need} (TensorFlow's wheel is over the "
                    "device tool's 64 MiB carry limit)")  # fmt: skip
    path = os.path.join(out_dir, "word2vec.json")
    cmd = [sys.executable, os.path.join(bench.ROOT, "launch", "benchmark_embeddings.py"),
           "--variants=sg", f"--epochs={args.w2v_epochs}", f"--out={path}"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=bench.ROOT)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode or not os.path.exists(path):
        return dict(error=bench.output_tail(proc))
    with open(path) as f:
        runs = {r.get("variant"): r for r in json.load(f)["runs"]}
    t, g = runs.get("tlx_sg", {}), runs.get("gensim_sg", {})
    r = dict(tlx_words_per_s=t.get("words_per_s"), gensim_words_per_s=g.get("words_per_s"),
             tlx_analogy=t.get("quality", {}).get("analogy/total_accuracy"),
             gensim_analogy=g.get("quality", {}).get("analogy/total_accuracy"),
             cores=os.cpu_count())  # fmt: skip
    if r["tlx_words_per_s"] and r["gensim_words_per_s"]:
        r["ratio"] = r["tlx_words_per_s"] / r["gensim_words_per_s"]
    return r


def run_child(args) -> dict:
    name = args.only
    try:
        if name.startswith("peak_"):
            return bench.peak(name[5:], shapes(args)["peak_n"], args.peak_repeats, "bfloat16")
        model, lib = name.split("_")
        return dict(bench_tlx(model, args) if lib == "tlx" else bench_torch(model, args))
    except ImportError as e:  # e.g. no torch / transformers on this machine
        return bench.unavailable(e)


# ---------------------------------------------------------------- parent


def spawn(args, only: str, timeout_s: float) -> dict:
    """One stage in a fresh interpreter, killed after timeout_s; its result or why not."""
    flags = [a for a in sys.argv[1:] if not a.startswith(("--only", "--out"))]
    env = bench.subprocess_env(benchmark_gpt.child_env("torch" if only.endswith("torch") else only))
    if only.endswith("torch"):
        env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--only={only}",
                               *flags], env=env, capture_output=True, text=True,
                              timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout_s:.0f} s")
    result = bench.child_result(proc)
    return result if result is not None else dict(error=bench.output_tail(proc))


def train_flops(model: str, size: str, seq: int, batch: int) -> float:
    if model == "bert":  # all L positions scored (mlm_all_positions; HF's head does the same)
        return benchmark_bert.train_flops(size, batch, seq, seq)
    return benchmark_gpt.train_flops(size, batch, seq)


def table(results: dict, peak_tflops: float) -> str:
    rows = ["| stage | step ms (median) | tokens/s | TFLOP/s | MFU | vs torch | notes |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        if name.startswith("peak_"):
            note = r.get("error") or r.get("unavailable") or r.get("device", "")
            tf = f"{r['gflops'] / 1e3:.3g}" if "gflops" in r else "-"
            rows.append(f"| {name} (bf16 {r.get('n', '')}^2) | | | {tf} | | | {note} |")
        elif name == "word2vec":
            if "ratio" in r:
                rows.append(f"| word2vec sg ({r['cores']} CPU cores) | | tlx "
                            f"{r['tlx_words_per_s']:,.0f} vs gensim {r['gensim_words_per_s']:,.0f}"
                            f" words/s | | | {r['ratio']:.2f}x | analogy {r['tlx_analogy']:.3f} "
                            f"vs {r['gensim_analogy']:.3f} |")  # fmt: skip
            else:
                rows.append(f"| word2vec | | | | | | {r.get('unavailable') or r.get('error')} |")
        elif "median_step_s" in r:
            peer = results.get(name.replace("_tlx", "_torch"), {})
            vs = ""
            if name.endswith("_tlx") and "median_step_s" in peer:
                vs = f"{peer['median_step_s'] / r['median_step_s']:.2f}x"
            note = r.get("attn_implementation") or json.dumps(r.get("config", {}))
            if r.get("missing_config_keys"):
                note += f"; config lacks {r['missing_config_keys']}"
            rows.append(f"| {name} B={r['batch']} L={r['seq']} | {r['median_step_s'] * 1e3:.1f} | "
                        f"{r['tokens_per_s']:,.0f} | {r['tflops']:.3g} | {r['mfu']:.1%} | {vs} | "
                        f"{note} |")  # fmt: skip
        else:
            why = (r.get("unavailable") or r.get("error") or "?").replace("\n", " / ")
            rows.append(f"| {name} | | | | | | failed: {why} |")
    return (
        "\n".join(rows) + f"\n\nMFU against the measured jax bf16 peak, {peak_tflops:.0f} TFLOP/s."
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU dry run at tiny shapes")
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_bench"))
    ap.add_argument("--stages", default=",".join(STAGES))
    bench.add_step_flags(ap)
    ap.add_argument("--peak_repeats", type=int, default=10)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--bert_batch", type=int, default=0, help="0: 128 (full) / 2 (tiny)")
    ap.add_argument("--gpt_batch", type=int, default=0, help="0: 32 (full) / 2 (tiny)")
    ap.add_argument("--remat", default="none", help="model.remat (tlx.precision.REMATS)")
    ap.add_argument("--microbatches", type=int, default=1, help="train.microbatches")
    ap.add_argument("--attention_impl", default="auto", help="xla | cudnn | auto")
    ap.add_argument("--attn_dropout", type=float, default=0.0)
    ap.add_argument("--gpt_xent_chunk", type=int, default=0, help="objective.xent_chunk")
    ap.add_argument("--w2v_epochs", type=float, default=1)
    ap.add_argument("--budget_s", type=float, default=480, help="whole run; stages share it")
    ap.add_argument("--only", default="", help="internal: run one stage in this process")
    args = ap.parse_args(argv)
    if args.only:
        bench.emit(run_child(args))
        return
    stages = [s for s in args.stages.split(",") if s]
    if set(stages) - set(STAGES):
        raise SystemExit(f"unknown stages {set(stages) - set(STAGES)}; expected {STAGES}")
    os.makedirs(args.out, exist_ok=True)
    start, results, s = time.perf_counter(), {}, shapes(args)
    for i, name in enumerate(stages):
        left = args.budget_s - (time.perf_counter() - start)
        if left < 10:
            results[name] = dict(error="skipped: the run's time budget was spent")
            continue
        # a stage may use its share of what is left, or all of it if it is the last
        share = left if i == len(stages) - 1 else max(left / (len(stages) - i) * 2, 60)
        print(f"[{time.perf_counter() - start:5.0f} s] {name} (limit {share:.0f} s)", flush=True)
        t0 = time.perf_counter()
        if name == "word2vec":
            results[name] = (
                bench_word2vec(args, args.out)
                if not args.tiny
                else dict(unavailable="skipped with --tiny: a full-corpus run")
            )
        else:
            results[name] = spawn(args, name, min(share, left))
        results[name]["stage_wall_s"] = time.perf_counter() - t0
    peak = results.get("peak_jax", {}).get("gflops", float("nan"))
    for name, r in results.items():
        if name.split("_")[0] in ("bert", "gpt"):
            size, seq, batch = s[name.split("_")[0]]
            r.update(size=size, seq=seq, batch=batch,
                     train_flops=train_flops(name.split("_")[0], size, seq, batch))  # fmt: skip
            bench.summarise(r, batch * seq, peak)
            if "times_s" in r:
                r["stdev_step_s"] = statistics.stdev(r["times_s"]) if len(r["times_s"]) > 1 else 0
    md = table(results, peak / 1e3)
    meta = dict(bench.machine(), argv=sys.argv[1:], tiny=args.tiny, shapes=s,
                wall_s=time.perf_counter() - start)  # fmt: skip
    bench.write_json(os.path.join(args.out, "gpu_bench.json"), dict(meta=meta, results=results))
    with open(os.path.join(args.out, "gpu_bench.md"), "w") as f:
        f.write(f"# gpu_bench {' '.join(sys.argv[1:])}\n\n{md}\n")
    print(md)


if __name__ == "__main__":
    main()
