"""What the train-step benchmarks (benchmark_bert.py, benchmark_gpt.py) share: step timing, the
matmul peak that MFU divides by, one child process per measurement, and the machine description
written into the JSON. Imports only the standard library and numpy, so the parent process never
initialises a JAX or torch device that the children need.
"""

import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

MARK = "BENCH_JSON "  # a child's result: one line, this prefix, then JSON
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "transformers")


def time_steps(step, warmup: int, steps: int) -> list[float]:
    """Runs `warmup` untimed calls, then returns the wall time of each of `steps` calls.
    `step` must block until its work is done (block_until_ready, cuda.synchronize)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def jax_device() -> str:
    import jax

    d = jax.devices()[0]
    return f"cpu:{_cpu_name()}" if d.platform == "cpu" else f"{d.platform}:{d.device_kind}"


def torch_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu' (with every core given to torch's threads)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    torch.set_num_threads(os.cpu_count())
    return "cpu"


def torch_device_name(device: str) -> str:
    import torch

    return f"cuda:{torch.cuda.get_device_name()}" if device == "cuda" else f"cpu:{_cpu_name()}"


def peak(lib: str, n: int, repeats: int, dtype: str = "float32") -> dict:
    """n x n matmul throughput in `dtype` on the library's default device, in GFLOP/s: the
    fastest of `repeats` products (a peak; on a shared CPU the median of a 2048^2 product swung
    from 50 to 100 GFLOP/s with other load), the median alongside. n = 0 picks 2048 on a CPU and
    8192 on an accelerator (where 2048 is too small to hide the launch overhead)."""
    if lib == "jax":
        import jax

        device = jax_device()
        n = n or (2048 if device.startswith("cpu") else 8192)
        a = b = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
        dot = jax.jit(lambda x, y: x @ y)
        mm = lambda: jax.block_until_ready(dot(a, b))
    else:
        import torch

        dev = torch_device()
        device = torch_device_name(dev)
        n = n or (2048 if dev == "cpu" else 8192)
        a = b = torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))
        sync = torch.cuda.synchronize if dev == "cuda" else lambda: None
        mm = lambda: (torch.mm(a, b), sync())
    times = time_steps(mm, 2, repeats)
    gflops = 2 * n**3 / min(times) / 1e9
    median_gflops = 2 * n**3 / statistics.median(times) / 1e9
    return dict(variant=f"peak_{lib}", gflops=gflops, median_gflops=median_gflops, n=n,
                dtype=dtype, device=device)  # fmt: skip


def spawn(script: str, only: str, flags: list[str], env: dict | None = None, label="") -> dict:
    """Runs `script --only=ONLY FLAGS` in a fresh interpreter and returns its result line; on a
    crash, {'variant', 'error': last lines of its stderr}."""
    cmd = [sys.executable, os.path.abspath(script), f"--only={only}", *flags]
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        cmd, env=dict(os.environ, PYTHONPATH=path, **(env or {})), capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  {only} {label}: FAILED (rc={proc.returncode}): {' | '.join(tail)}", flush=True)
        return dict(variant=only, error="\n".join(tail))
    return json.loads(lines[-1][len(MARK) :])


def emit(result: dict):
    """A child's last word: its result as one marked JSON line on stdout."""
    print(MARK + json.dumps(result), flush=True)


def summarise(r: dict, tokens: int, peak_gflops: float):
    """Adds median (and fastest) step time, tokens/s, model TFLOP/s and MFU, all from the median,
    to a result with times_s and train_flops."""
    if "times_s" not in r:
        return
    med = statistics.median(r["times_s"])
    r.update(median_step_s=med, min_step_s=min(r["times_s"]), tokens_per_s=tokens / med,
             tflops=r["train_flops"] / med / 1e12,
             mfu=r["train_flops"] / med / (peak_gflops * 1e9))  # fmt: skip


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        name = ""
    return name or platform.processor()


def machine() -> dict:
    """Host CPU, core count, Python and the versions of the packages the benchmarks use."""
    pkgs = [p for p in PACKAGES if importlib.util.find_spec(p)]
    return dict(cpu=_cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
                versions={p: importlib.metadata.version(p) for p in pkgs})  # fmt: skip
