r"""Can the input pipeline feed an accelerator? Local training batches per second from tlx's
indexed stream (data_pipelines.indexed, what tlx.train reads) against the peer, the same task's
SeqIO/tf.data stream (`data_pipelines.get_dataset(..., shuffle=True)`, batched, prefetched), in
one process on this machine's cores; plus what a resume costs at step 10 and at step 100,000.

  python launch/benchmark_input.py                       # bert, gpt, sst2 at their defaults
  python launch/benchmark_input.py --tasks=bert --batch=256 --seconds=10

Rates are rows (BERT, SST-2: examples; GPT: tokens = rows x L) over `--seconds` of batches
after a warm-up batch; `build s` is the one-time cost of making the split's arrays (instances,
packing, tokenisation) when a run starts. Resume: the wall time from `train_batches(..,
start_example=s * B)` to its first batch, the split's arrays already built (as on any restart
after the first epoch's build). Prints a table and one JSON line (BENCH_JSON ...).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TASKS = {  # name -> (base task, seq_len, unit)
    "bert": ("bert_pretrain", 128, "examples"),
    "gpt": ("causal_lm", 128, "tokens"),
    "sst2": ("sst2", 64, "examples"),
}


def _rate(batches, seconds: float, unit_per_batch: int) -> float:
    next(batches)  # warm: thread pools, first-epoch permutation
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(batches)
        n += unit_per_batch
    return n / (time.perf_counter() - t0)


def _config(task: str, seq_len: int, seed: int):
    import ml_collections

    cfg = ml_collections.ConfigDict()
    cfg.seed = seed
    cfg.data = ml_collections.ConfigDict({"task_name": task, "seq_len": seq_len})
    cfg.train = ml_collections.ConfigDict({"eval_steps": -1})
    return cfg


def measure(name: str, batch: int, seconds: float, seed: int = 0) -> dict:
    import tensorflow as tf

    import data_pipelines
    from tlx import input_pipeline

    base, seq_len, unit = TASKS[name]
    cfg = _config(data_pipelines.get_task_name(base), seq_len, seed)
    per = batch * (seq_len if unit == "tokens" else 1)

    t0 = time.perf_counter()
    input_pipeline.examples(cfg, "train", True)
    build = time.perf_counter() - t0
    tlx_rate = _rate(input_pipeline.train_batches(cfg, batch), seconds, per)

    resume = {}
    for step in (10, 100_000):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            next(input_pipeline.train_batches(cfg, batch, step * batch))
            times.append(time.perf_counter() - t0)
        resume[step] = statistics.median(times)

    ds = data_pipelines.get_dataset(
        cfg.data.task_name, split="train", seq_len=seq_len, seed=seed, shuffle=True
    )
    it = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    peer_rate = _rate(it, seconds, per)
    return {
        "task": name,
        "unit": unit,
        "batch": batch,
        "seq_len": seq_len,
        "build_s": build,
        "tlx_per_s": tlx_rate,
        "seqio_per_s": peer_rate,
        "ratio": tlx_rate / peer_rate,
        "resume_s": {str(k): v for k, v in resume.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="bert,gpt,sst2", help=f"of {sorted(TASKS)}")
    p.add_argument("--batch", type=int, default=256, help="global batch (one process reads all)")
    p.add_argument("--seconds", type=float, default=5.0, help="per measured rate")
    p.add_argument("--out", default="", help="also write the JSON here")
    args = p.parse_args()
    rows = [measure(t, args.batch, args.seconds) for t in args.tasks.split(",")]
    print(f"{'task':6} {'unit':9} {'tlx /s':>12} {'seqio /s':>12} {'ratio':>7} "
          f"{'build s':>8} {'resume@10':>10} {'resume@1e5':>10}")  # fmt: skip
    for r in rows:
        print(
            f"{r['task']:6} {r['unit']:9} {r['tlx_per_s']:12,.0f} {r['seqio_per_s']:12,.0f} "
            f"{r['ratio']:7.1f} {r['build_s']:8.2f} {r['resume_s']['10'] * 1e3:8.1f}ms "
            f"{r['resume_s']['100000'] * 1e3:8.1f}ms"
        )
    payload = {"cpus": os.cpu_count(), "rows": rows}
    print("BENCH_JSON " + json.dumps(payload), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
    os._exit(0)  # tf.data iterators left open would hold the interpreter at exit


if __name__ == "__main__":
    main()
