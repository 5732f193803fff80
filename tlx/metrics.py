"""Metric logging: TensorBoard (via clu), a JSONL file, and a progress line with ETA."""

import json
import math
import os
import time

import jax
import numpy as np
from clu import metric_writers


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
    if "lm_loss" in out:  # derived: perplexity of the window's tokens
        out["perplexity"] = math.exp(min(out["lm_loss"], 50.0))
    return out


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
        if self._start_step is None:
            self._start_step, self._start = step, time.time()
            eta = "?"
        else:
            rate = (step - self._start_step) / max(time.time() - self._start, 1e-9)
            left = (self.total_steps - step) / rate if rate > 0 else math.inf
            eta = f"{int(left // 60)}m{int(left % 60):02d}s" if math.isfinite(left) else "?"
        shown = " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if k in SHOWN and math.isfinite(v)
        )
        if self.is_main:
            print(f"[{step}/{self.total_steps}] {shown} eta={eta}", flush=True)

    def close(self) -> None:
        self.writer.close()


SHOWN = (
    "loss",
    "mlm_accuracy",
    "nsp_accuracy",
    "accuracy",
    "perplexity",
    "lr",
    "tokens_per_sec",
    "eval/loss",
    "eval/mlm_accuracy",
    "eval/nsp_accuracy",
    "eval/accuracy",
    "eval/f1",
    "eval/token_accuracy",
    "eval/average",
    "eval/perplexity",
    "eval/wordsim353/spearman",
    "eval/simlex999/spearman",
    "eval/analogy/total_accuracy",
)
