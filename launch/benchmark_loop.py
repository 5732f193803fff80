r"""Does the training loop starve its step? The same jitted `setup.train_step` timed (a) alone
on one fixed device batch and (b) inside `tlx.train` (its metrics.jsonl `step_time`, the first
logged window, which holds the compile, left out); ratio = (b) steps/s over (a) steps/s.

  python launch/benchmark_loop.py --model=bert      # configs/bert/pretrain.py:size=mini
  python launch/benchmark_loop.py --model=gpt       # configs/gpt/pretrain.py (mini)
  python launch/benchmark_loop.py --model=word2vec  # configs/embeddings/word2vec.py (sg)
  python launch/benchmark_loop.py --model=word2vec --arg=noise_group=32,noise_draws=4

Both halves run in this one process at the config's own batch and sequence length. (a) is
timed in windows of `--window` steps with one block_until_ready per window, as the loop
syncs once per logged window; it runs before and after (b), and the median window counts.
(b) trains `--steps` steps logging every `--window`, with no evaluator (c.evals = {}) and one
checkpoint at the end, so its windows hold only what every step pays: reading, placing and
dispatching batches. Prints one JSON line (BENCH_JSON ...) and a table row.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = {
    "bert": ("configs.bert.pretrain", "size=mini"),
    "gpt": ("configs.gpt.pretrain", "size=mini"),
    "word2vec": ("configs.embeddings.word2vec", "arch=sg"),
}


def _config(model: str, steps: int, window: int, prefetch: int, extra: str = ""):
    import importlib

    module, arg = CONFIGS[model]
    cfg = importlib.import_module(module).get_config(",".join(filter(None, [arg, extra])))
    cfg.unlock()
    cfg.train.epochs, cfg.train.steps = 0.0, steps
    cfg.train.log_every, cfg.train.eval_every, cfg.train.eval_steps = window, steps, 1
    cfg.train.prefetch = prefetch
    cfg.checkpoint.every, cfg.checkpoint.async_save = steps, False
    cfg.evals, cfg.best_metric = {}, ""
    return cfg


def step_alone(cfg, windows: int, window: int) -> list[float]:
    """Seconds per step of `windows` windows of the jitted step on one fixed device batch."""
    import jax

    from tlx import input_pipeline, partitioning, steps

    cfg = type(cfg)(cfg.to_dict())
    cfg.data.task_name = steps.resolve_task(cfg)
    steps.fill_model_dims(cfg)
    batch_size = cfg.train.batch_size
    setup = steps.build(cfg, input_pipeline.example_batch(cfg, batch_size))
    state = setup.init(jax.random.PRNGKey(cfg.seed))
    stream = input_pipeline.train_batches(cfg, batch_size)
    host = next(stream)
    stream.close()  # else tf.data's prefetch threads keep reading beside the timed steps
    batch = partitioning.global_batch(host, setup.batch_sharding)
    for _ in range(3):  # compile, then settle
        state, metrics = setup.train_step(state, batch)
    jax.block_until_ready((state, metrics))
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(window):
            state, metrics = setup.train_step(state, batch)
        jax.block_until_ready((state, metrics))
        out.append((time.perf_counter() - t0) / window)
    return out


def loop(cfg) -> list[float]:
    """metrics.jsonl step_time of every logged window but the first (the compile's)."""
    from tlx import train

    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(cfg, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    return [r["step_time"] for r in rows if "step_time" in r][1:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(CONFIGS), required=True)
    p.add_argument("--steps", type=int, default=0, help="loop steps (0: 60, word2vec 300)")
    p.add_argument("--window", type=int, default=0, help="steps per window (0: steps / 6)")
    p.add_argument("--prefetch", type=int, default=2, help="train.prefetch for the loop")
    p.add_argument("--arg", default="", help="more config args, k=v,k=v (noise_group=32,...)")
    p.add_argument(
        "--part", choices=("both", "alone", "loop"), default="both",
        help="one half only (a slow machine: run each in its own process, compare the medians)",
    )  # fmt: skip
    args = p.parse_args()
    n = args.steps or (300 if args.model == "word2vec" else 60)
    window = args.window or max(1, n // 6)
    cfg = _config(args.model, n, window, args.prefetch, args.arg)
    alone = step_alone(cfg, 3, window) if args.part != "loop" else []
    in_loop = loop(cfg) if args.part != "alone" else []
    if args.part == "both":
        alone += step_alone(cfg, 3, window)
    a = statistics.median(alone) if alone else float("nan")
    b = statistics.median(in_loop) if in_loop else float("nan")
    result = {
        "model": args.model,
        "config": ":".join(CONFIGS[args.model]) + (f",{args.arg}" if args.arg else ""),
        "batch": cfg.train.batch_size,
        "seq_len": cfg.data.seq_len,
        "prefetch": args.prefetch,
        "step_alone_ms": 1e3 * a,
        "loop_step_ms": 1e3 * b,
        "ratio": a / b,
        "alone_windows_ms": [round(1e3 * x, 2) for x in alone],
        "loop_windows_ms": [round(1e3 * x, 2) for x in in_loop],
    }
    print("BENCH_JSON " + json.dumps(result), flush=True)
    print(f"| {args.model} | {1e3 * a:.1f} | {1e3 * b:.1f} | {a / b:.3f} |", flush=True)


if __name__ == "__main__":
    main()
