"""What the train-step benchmarks (benchmark_bert.py, benchmark_gpt.py, benchmark_recurrent.py,
gpu_bench.py) share: their common flags, step timing and the tlx and PyTorch steps they time, the
matmul peak that MFU divides by, one child process per measurement, the fastest peer, and the
machine description written into the JSON. Imports only the standard library and numpy, so the
parent process never initialises a JAX or torch device that the children need.
"""

import argparse
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


def tlx_step(setup, batch: dict):
    """`step()` for time_steps: one train step of `setup` (tlx.steps.build's) on `batch`, put on
    the setup's batch sharding, from the state of PRNGKey(0), which each call donates to the
    next; it blocks until the step is done."""
    import jax

    device_batch = {k: jax.device_put(v, setup.batch_sharding) for k, v in batch.items()}
    holder = [setup.init(jax.random.PRNGKey(0))]

    def step():
        holder[0], metrics = setup.train_step(holder[0], device_batch)
        jax.block_until_ready((holder[0], metrics))

    return step


def torch_step(loss_fn, opt, params: list, clip: float, device: str, bf16: bool = False):
    """`step()` for time_steps: one PyTorch train step, loss_fn() (under autocast(bfloat16) when
    bf16), backward, clipping `params` to global norm `clip`, opt.step(); it synchronises on
    CUDA. `params` is a list (a generator would be spent by the first step)."""
    import torch

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def time_jax(loss_fn, params, batch: dict, warmup: int, steps: int, *, lr, eps, wd, clip):
    """Times jit(fwd + bwd + clip to global norm `clip` + AdamW(lr, eps, weight decay wd)) with
    donated state, from PRNGKey(0); loss_fn(params, rng, batch) -> the scalar loss."""
    import jax
    import jax.numpy as jnp
    import optax

    tx = optax.chain(optax.clip_by_global_norm(clip), optax.adamw(lr, eps=eps, weight_decay=wd))

    def train_step(params, opt_state, rng, batch):
        rng, sub = jax.random.split(rng)
        loss, grads = jax.value_and_grad(loss_fn)(params, sub, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rng, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    params = jax.tree.map(jnp.asarray, params)
    batch = jax.tree.map(jnp.asarray, batch)
    holder = [(params, tx.init(params), jax.random.PRNGKey(0))]

    def step():
        *state, loss = train_step(*holder[0], batch)
        holder[0] = tuple(state)
        jax.block_until_ready((holder[0], loss))

    return time_steps(step, warmup, steps)


def unavailable(e: ImportError) -> dict:
    """The result of a measurement whose library cannot be imported here: why, in one line."""
    return dict(unavailable=f"{type(e).__name__}: {e}".splitlines()[0])


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


def subprocess_env(extra: dict | None = None) -> dict:
    """This process's environment with the repo root first on PYTHONPATH, and `extra`."""
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **(extra or {}))


def child_result(proc: subprocess.CompletedProcess) -> dict | None:
    """A finished child's marked result line, or None when it failed or printed none."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        return None
    return json.loads(lines[-1][len(MARK) :])


def output_tail(proc: subprocess.CompletedProcess) -> str:
    """The last 3 lines of a child's stderr (of its stdout if stderr is empty): why it failed."""
    return "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])


def spawn(script: str, only: str, flags: list[str], env: dict | None = None, label="") -> dict:
    """Runs `script --only=ONLY FLAGS` in a fresh interpreter and returns its result line; on a
    crash, {'variant', 'error': last lines of its stderr}."""
    cmd = [sys.executable, os.path.abspath(script), f"--only={only}", *flags]
    proc = subprocess.run(cmd, env=subprocess_env(env), capture_output=True, text=True)
    result = child_result(proc)
    if result is None:
        tail = output_tail(proc)
        joined = " | ".join(tail.splitlines())
        print(f"  {only} {label}: FAILED (rc={proc.returncode}): {joined}", flush=True)
        return dict(variant=only, error=tail)
    return result


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


def fastest_peer(results: list, size: str, peers) -> tuple[dict, str | None]:
    """({variant: result} of the measured variants of `size`, the peer of smallest median step
    time among them or None)."""
    by = {r["variant"]: r for r in results if r["size"] == size and "median_step_s" in r}
    done = [p for p in peers if p in by]
    return by, (min(done, key=lambda p: by[p]["median_step_s"]) if done else None)


def add_step_flags(ap: argparse.ArgumentParser) -> None:
    """--steps and --warmup: the steps timed one by one after the untimed ones."""
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)


def add_run_flags(ap: argparse.ArgumentParser, out: str = "", peak_n: int = 0) -> None:
    """--out (the JSON), --peak_n and --peak_repeats (the matmul peak), and --only (a child's
    one measurement)."""
    ap.add_argument("--out", default=out)
    peak_help = {"help": "0: 2048 on CPU, 8192 on GPU"} if peak_n == 0 else {}
    ap.add_argument("--peak_n", type=int, default=peak_n, **peak_help)
    ap.add_argument("--peak_repeats", type=int, default=10)
    ap.add_argument("--only", default="", help="internal: run one measurement in this process")


def names(flag: str, value: str, known) -> list[str]:
    """The comma-separated names of a flag's value; one not in `known` is a SystemExit."""
    got = [s for s in value.split(",") if s]
    if set(got) - set(known):
        raise SystemExit(f"unknown {flag} {set(got) - set(known)}; expected {sorted(known)}")
    return got


def write_json(path: str, data: dict) -> None:
    """`data` as indented JSON at `path`, its folder made first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def save_results(path: str, meta: dict, results: list, ratios: dict) -> None:
    """A benchmark's JSON, {meta, results, ratios}, at `path` (none when empty), and a line
    saying so."""
    if path:
        write_json(path, dict(meta=meta, results=results, ratios=ratios))
        print(f"wrote {path}")


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
