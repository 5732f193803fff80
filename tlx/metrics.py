"""Metric logging: TensorBoard (via clu), a JSONL file, and a progress line with ETA."""

import json
import math
import os
import time

import jax
import numpy as np
from clu import metric_writers

from tlx import objectives


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
HIDDEN = ("grad_norm", "steps_per_sec", "step_time", "num_examples")


def headline(metrics: dict[str, float], extra=()) -> dict[str, float]:
    """The metrics a progress line shows: the top-level ones (a mixture's per-member `TASK/...`
    stay in the logs) that are not bookkeeping, plus `extra` keys an evaluator names."""
    return {k: v for k, v in metrics.items() if ("/" not in k and k not in HIDDEN) or k in extra}


def quiet_logs() -> None:
    """Library INFO logs (Orbax, clu, SeqIO) drown the progress line; --verbosity=0 restores."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
