"""Metric logging: TensorBoard (via clu), a JSONL file, and a progress line with ETA; what the
loop measures about its own speed (real tokens, TFLOP/s, MFU) and the profiler window."""

import json
import math
import os
import time

import jax
import numpy as np
from clu import metric_writers

from tlx import flops, objectives
from tlx.errors import ConfigError


def reduce(window: list[dict]) -> dict[str, float]:
    """Averages per-step metrics given as (sum, count) pairs or plain scalars."""
    totals: dict[str, list[float]] = {}
    for step_metrics in jax.device_get(window):
        for name, value in step_metrics.items():
            s, c = value if isinstance(value, tuple | list) else (value, 1.0)
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += float(np.asarray(s))
            acc[1] += float(np.asarray(c))
    out = {k: s / c if c else float("nan") for k, (s, c) in totals.items()}
    return objectives.derived_metrics(out)


def _truncate_after(path: str, step: int) -> None:
    """Drops the records of steps after `step` (logged after the checkpoint a run resumes
    from, and about to be logged again), so a resumed run's metrics.jsonl has each step once.
    A torn last line (a kill mid-write) is dropped too; the file is replaced atomically."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept == lines:
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class MetricsLog:
    """Writes each logged step to TensorBoard and `workdir/metrics.jsonl` (process 0 only)."""

    def __init__(self, workdir: str, total_steps: int, start_step: int = 0):
        self.is_main = jax.process_index() == 0
        self.total_steps = total_steps
        self.path = os.path.join(workdir, "metrics.jsonl")
        if self.is_main:
            _truncate_after(self.path, start_step)
        self.writer = metric_writers.create_default_writer(
            os.path.join(workdir, "tensorboard"), just_logging=not self.is_main
        )
        self._start = time.time()
        self._start_step: int | None = None

    def write(self, step: int, metrics: dict[str, float], prefix: str = "") -> None:
        named = {f"{prefix}{k}": v for k, v in metrics.items()}
        if not self.is_main:
            return
        self.writer.write_scalars(step, named)
        self.writer.flush()
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **named}) + "\n")

    def progress(self, step: int, metrics: dict[str, float]) -> None:
        """`[step/total] k=v ... eta=` with every metric given (see `headline`)."""
        if self._start_step is None:
            self._start_step, self._start = step, time.time()
            eta = "?"
        else:
            rate = (step - self._start_step) / max(time.time() - self._start, 1e-9)
            left = (self.total_steps - step) / rate if rate > 0 else math.inf
            eta = f"{int(left // 60)}m{int(left % 60):02d}s" if math.isfinite(left) else "?"
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if math.isfinite(v))
        if self.is_main:
            print(f"[{step}/{self.total_steps}] {shown} eta={eta}", flush=True)

    def close(self) -> None:
        self.writer.close()


# Bookkeeping that stays in metrics.jsonl / TensorBoard, off the progress line.
HIDDEN = (
    "grad_norm", "steps_per_sec", "step_time", "num_examples", "padded_tokens_per_sec",
    "tflops_per_device",
)  # fmt: skip


def headline(metrics: dict[str, float], extra=()) -> dict[str, float]:
    """The metrics a progress line shows: the top-level ones (a mixture's per-member `TASK/...`
    stay in the logs) that are not bookkeeping, plus `extra` keys an evaluator names."""
    return {k: v for k, v in metrics.items() if ("/" not in k and k not in HIDDEN) or k in extra}


def quiet_logs() -> None:
    """Library INFO logs (Orbax, clu, SeqIO) drown the progress line; --verbosity=0 restores."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def real_tokens(batch: dict[str, np.ndarray]) -> int | None:
    """Non-padding tokens of a host batch, by what its task marks them with: `input_mask` (BERT,
    finetuning, CoVe's source) plus `decoder_mask` (CoVe's targets); `document_ids` > 0 (packed
    GPT / ELMo rows); centre words in a real sentence (word2vec: `sentence` >= 0 over the C
    centres of [C + 2W] rows); co-occurrence entries of `weight` > 0 (GloVe). None otherwise."""
    if "input_mask" in batch:
        n = np.count_nonzero(batch["input_mask"])
        return int(n + np.count_nonzero(batch.get("decoder_mask", 0)))
    if "document_ids" in batch:
        return int(np.count_nonzero(batch["document_ids"] > 0))
    if "sentence" in batch and "window" in batch:
        c = batch["window"].shape[1]
        w = (batch["sentence"].shape[1] - c) // 2
        return int(np.count_nonzero(batch["sentence"][:, w : w + c] >= 0))
    if "weight" in batch:
        return int(np.count_nonzero(batch["weight"] > 0))
    return None


class Throughput:
    """A window's speed: steps_per_sec, step_time, tokens_per_sec (real tokens, summed over
    processes), padded_tokens_per_sec (batch x seq_len), tflops_per_device and mfu (achieved /
    the chip's bf16 peak; absent where tlx.flops has no formula or no peak for the chip)."""

    def __init__(self, cfg, flops_per_example: float | None, global_batch: int):
        per_example = flops_per_example
        self.flops_per_step = None if per_example is None else per_example * global_batch
        self.padded_tokens = global_batch * cfg.data.seq_len
        self.devices = jax.device_count()
        self.peak = flops.peak_tflops(
            jax.devices()[0].device_kind, cfg.train.get("peak_tflops_per_device", 0.0)
        )

    def summary(self, steps: int, seconds: float, tokens: int | None) -> dict[str, float]:
        seconds = max(seconds, 1e-9)
        out = {
            "steps_per_sec": steps / seconds,
            "step_time": seconds / steps,
            "padded_tokens_per_sec": steps * self.padded_tokens / seconds,
        }
        if tokens is not None:
            if jax.process_count() > 1:  # each process counted its own rows
                from jax.experimental import multihost_utils

                tokens = int(np.sum(multihost_utils.process_allgather(np.int64(tokens))))
            out["tokens_per_sec"] = tokens / seconds
        if self.flops_per_step is not None:
            tflops = flops.tflops_per_device(self.flops_per_step, seconds / steps, self.devices)
            out["tflops_per_device"] = tflops
            if self.peak is not None:
                out["mfu"] = tflops / self.peak
        return out


class ProfileWindow:
    """`train.profile_steps="A,B"`: a jax.profiler trace of steps A..B (the A-th to the B-th
    train step, 1-based, inclusive) into `directory`, on process 0 only. `before(n)` precedes
    step n, `after(n, result)` follows it (the trace stops once step B's result is ready);
    `close()` stops a trace the loop left early."""

    def __init__(self, spec: str, directory: str):
        self.span, self.directory, self.active = None, directory, False
        if not spec:
            return
        parts = str(spec).split(",")
        try:
            a, b = (int(p) for p in parts)
        except ValueError:
            a = b = 0
        if len(parts) != 2 or not 1 <= a <= b:
            raise ConfigError(f"train.profile_steps={spec!r}: expected 'A,B' with 1 <= A <= B")
        self.span = (a, b) if jax.process_index() == 0 else None

    def before(self, step: int) -> None:
        if self.span and not self.active and self.span[0] <= step <= self.span[1]:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, step: int, result) -> None:
        if self.active and step >= self.span[1]:
            jax.block_until_ready(result)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.span = False, None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
