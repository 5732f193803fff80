r"""The parity tests under forced CPU code paths: do their bounds hold on any x86 CPU?

  python launch/isa_sweep.py [--configs=native,sse42,...] [--out=sweep.md] [--keep=DIR] \
      [--tests=NODE_ID,...] [-- EXTRA_PYTEST_ARGS]

One pytest subprocess per configuration (-p no:xdist), one after another, each with
TLX_PARITY_REPORT set (tests/parity.py appends a JSON line per compared tensor), then a markdown
table to stdout (and --out): per test and compared-tensor group (hidden_0..hidden_6 form one
group, `hidden_*`), per configuration, the worst err / bound ratio with that tensor's err and
bound, plus every configuration's pass / fail counts and wall time.

The configurations force, on one machine, the code paths another CPU would take:
  jax    XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 | AVX | AVX2 | AVX512: the most recent ISA XLA's
         LLVM backend may emit for its own kernels (elementwise fusions: erf, tanh, exp, rsqrt,
         layer norm arithmetic); --xla_cpu_prefer_vector_width=512 makes AVX512 use zmm registers
         (the default, 256, is what an AVX-512 Xeon runs); --xla_cpu_experimental_ynn_fusion_type=
         (empty) turns off the YNNPACK fusions, so dots and reductions run in XLA's own Eigen /
         emitted code instead of YNNPACK's runtime-dispatched kernels.
  torch  ATEN_CPU_CAPABILITY=default | avx2 | avx512 (ATen's vectorised kernels),
         TLX_TEST_TORCH_MKLDNN=0 | 1 (tests/parity.py sets torch.backends.mkldnn.enabled: oneDNN
         runs GELU and the LSTM without projection), ONEDNN_MAX_CPU_ISA (oneDNN's ISA cap),
         MKL_CBWR=COMPATIBLE (MKL's SSE2-compatible sgemm instead of its AVX-512 one).
tests/conftest.py appends --xla_force_host_platform_device_count=8 to XLA_FLAGS; the flags here
go before it. Before each run a probe in the same environment prints what actually took effect
(torch's capability and oneDNN flag, the widest vector register in XLA's emitted object code)
and fingerprints of a few jax / torch ops: a flag that is not honoured shows as an unchanged
fingerprint.

What cannot be forced here: YNNPACK, Eigen (compiled into jaxlib for one ISA) and MKL's
non-CBWR paths choose their kernels from the host's CPUID, so their SSE / AVX2 variants only
run on such a CPU; the sweep covers them by switching to a different implementation (Eigen,
MKL CBWR) rather than the same library at another ISA.

Imports only the standard library (the parent never initialises jax or torch).
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (description, environment)
CONFIGS = {
    "native": ("host defaults: jax AVX-512 (256-bit), YNNPACK; torch AVX512, oneDNN on", {}),
    "sse42": (
        "jax SSE4_2; torch default (no SIMD), oneDNN on at SSE4.1",
        {
            "XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2",
            "ATEN_CPU_CAPABILITY": "default",
            "TLX_TEST_TORCH_MKLDNN": "1",
            "ONEDNN_MAX_CPU_ISA": "SSE41",
        },
    ),
    "avx": (
        "jax AVX; torch avx2, oneDNN off",
        {
            "XLA_FLAGS": "--xla_cpu_max_isa=AVX",
            "ATEN_CPU_CAPABILITY": "avx2",
            "TLX_TEST_TORCH_MKLDNN": "0",
        },
    ),
    "avx2": (
        "jax AVX2; torch avx512, oneDNN off, MKL CBWR=COMPATIBLE",
        {
            "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
            "ATEN_CPU_CAPABILITY": "avx512",
            "TLX_TEST_TORCH_MKLDNN": "0",
            "MKL_CBWR": "COMPATIBLE",
        },
    ),
    "avx512_zmm": (
        "jax AVX512 with 512-bit vectors; torch avx2, oneDNN on at AVX2",
        {
            "XLA_FLAGS": "--xla_cpu_max_isa=AVX512 --xla_cpu_prefer_vector_width=512",
            "ATEN_CPU_CAPABILITY": "avx2",
            "TLX_TEST_TORCH_MKLDNN": "1",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
        },
    ),
    "sse42_eigen": (
        "jax SSE4_2, YNNPACK off (Eigen dots); torch default, oneDNN off, MKL CBWR",
        {
            "XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2 --xla_cpu_experimental_ynn_fusion_type=",
            "ATEN_CPU_CAPABILITY": "default",
            "TLX_TEST_TORCH_MKLDNN": "0",
            "MKL_CBWR": "COMPATIBLE",
        },
    ),
}

# The parity tests (every compared tensor reported), the LSTM file, and the tests/models
# float32-vs-float32 comparisons whose tolerances are stated in ulps.
TESTS = (
    "tests/test_convert.py::test_hf_to_tlx_parity",
    "tests/test_convert.py::test_tlx_to_hf_parity_pretraining",
    "tests/test_convert.py::test_tlx_to_hf_parity_classifier",
    "tests/test_convert.py::test_minilm_parity_and_init_from",
    "tests/test_convert_gpt2.py::test_hf_to_tlx_parity",
    "tests/test_convert_gpt2.py::test_packed_row_matches_hf_per_document",
    "tests/test_convert_gpt2.py::test_tlx_to_hf_parity_lm",
    "tests/test_convert_gpt2.py::test_tlx_to_hf_classifier_exports_the_decoder",
    "tests/layers/test_recurrent.py",
    "tests/models/test_gpt.py::test_packed_documents_do_not_attend_across",
    "tests/models/test_gpt.py::test_cached_decoding_equals_uncached",
    "tests/models/test_elmo.py::test_scalar_mix",
)


# --- the probe (runs in a child, in the configuration's environment) ----------------------------


def probe() -> dict:
    """What took effect: torch's ATen capability and oneDNN flag (after tests/parity.py's
    hook), the widest vector register class in XLA's emitted kernels, and op fingerprints."""
    import hashlib
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "tlx_tests_parity", os.path.join(ROOT, "tests", "parity.py")
    )
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # the oneDNN hook
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    def fp(x) -> str:
        return hashlib.md5(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()[:6]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 384)).astype(np.float32)
    w = rng.normal(size=(384, 512)).astype(np.float32)
    jax_ops = {  # arguments, not closed-over constants: XLA would fold those at compile time
        "tanh": lambda x, w: jnp.tanh(x),
        "exp": lambda x, w: jnp.exp(x),
        "rsqrt": lambda x, w: jax.lax.rsqrt(jnp.abs(x) + 1),
        "dot": lambda x, w: x @ w,
        "sum": lambda x, w: x.sum(-1),
    }
    jax_fp = {k: fp(jax.jit(f)(x, w)) for k, f in jax_ops.items()}
    tx, tw = torch.from_numpy(x), torch.from_numpy(w.T.copy())
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(384, 32, batch_first=True)
    with torch.no_grad():
        torch_fp = {
            "linear": fp(torch.nn.functional.linear(tx, tw)),
            "gelu": fp(torch.nn.functional.gelu(tx)),
            "tanh": fp(torch.tanh(tx)),
            "softmax": fp(torch.softmax(tx, -1)),
            "lstm": fp(lstm(tx[None])[0]),
        }
    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_mkldnn": torch.backends.mkldnn.enabled,
        "xla_vector_registers": _xla_registers(),
        "jax": jax_fp,
        "torch": torch_fp,
    }


def _xla_registers() -> str:
    """Compiles two elementwise kernels with the environment's XLA_FLAGS plus a dump, and
    returns the widest register class (xmm < ymm < zmm) in their object code."""
    objdump = shutil.which("objdump")
    if not objdump:
        return "n/a (no objdump)"
    with tempfile.TemporaryDirectory() as d:
        code = (
            "import jax, jax.numpy as jnp, numpy as np;"
            "x = np.random.default_rng(0).normal(size=(384, 1536)).astype(np.float32);"
            "jax.jit(lambda x: jax.lax.rsqrt(jnp.abs(x) + 1))(x).block_until_ready();"
            "jax.jit(lambda x: jnp.tanh(x) * jnp.exp(x))(x).block_until_ready()"
        )
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={d}".strip()
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "XLA_FLAGS": flags}, check=True
        )
        regs = set()
        for name in os.listdir(d):
            if name.endswith(".o"):
                out = subprocess.run(
                    [objdump, "-d", os.path.join(d, name)], capture_output=True, text=True
                ).stdout
                regs |= set(re.findall(r"%?\b([xyz]mm)\d+", out))
        return max(regs, key=lambda r: "xyz".index(r[0])) if regs else "none"


# --- the sweep ----------------------------------------------------------------------------------


def _env(config_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    for k, v in config_env.items():
        env[k] = f"{env.get(k, '')} {v}".strip() if k == "XLA_FLAGS" else v
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("USE_TF", "0")
    return env


def _junit(path: str) -> dict[str, str]:
    """node id -> 'passed' | 'failed' | 'skipped'."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        node = classname.replace(".", "/") + ".py::" + name
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        outcomes[node] = "failed" if bad else "skipped" if skipped else "passed"
    return outcomes


def run_config(name: str, tests: list[str], extra: list[str], workdir: str) -> dict:
    desc, config_env = CONFIGS[name]
    env = _env(config_env)
    report = os.path.join(workdir, f"{name}.jsonl")
    junit = os.path.join(workdir, f"{name}.xml")
    env["TLX_PARITY_REPORT"] = report
    for path in (report, junit):
        if os.path.exists(path):
            os.remove(path)  # tests/parity.py appends
    p = subprocess.run(
        [sys.executable, __file__, "--probe"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if p.returncode:
        raise SystemExit(f"probe failed under {name}:\n{p.stderr[-3000:]}")
    probed = json.loads(p.stdout.strip().splitlines()[-1])
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q"]
    cmd += [f"--junitxml={junit}", *tests, *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    with open(os.path.join(workdir, f"{name}.log"), "w") as f:
        f.write(p.stdout + p.stderr)
    records = []
    if os.path.exists(report):
        with open(report) as f:
            records = [json.loads(line) for line in f]
    outcomes = _junit(junit) if os.path.exists(junit) else {}
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    print(f"[{name}] {tail} ({wall:.0f} s)", file=sys.stderr)
    result = {
        "name": name,
        "desc": desc,
        "env": config_env,
        "probe": probed,
        "rc": p.returncode,
        "wall_s": wall,
        "records": records,
        "outcomes": outcomes,
        "summary": tail,
    }
    with open(os.path.join(workdir, f"{name}.json"), "w") as f:
        json.dump(result, f)
    return result


def _group(name: str) -> str:
    return re.sub(r"_\d+$", "_*", name)


def _short(test: str) -> str:
    return test.removeprefix("tests/")


def table(results: list[dict]) -> str:
    names = [r["name"] for r in results]
    lines = ["| configuration | environment | probe | tests | wall |", "|---|---|---|---|---|"]
    for r in results:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "(none)"
        pr = r["probe"]
        probe_s = (
            f"torch {pr['torch_capability']}, oneDNN {'on' if pr['torch_mkldnn'] else 'off'}, "
            f"XLA regs {pr['xla_vector_registers']}; "
            f"jax {'/'.join(pr['jax'].values())}; torch {'/'.join(pr['torch'].values())}"
        )
        counts = collections.Counter(r["outcomes"].values())
        tests = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or r["summary"]
        lines.append(f"| {r['name']} | `{env}` | {probe_s} | {tests} | {r['wall_s']:.0f} s |")
    lines.append("")
    lines.append(
        "Fingerprints (md5 prefixes): jax tanh/exp/rsqrt/dot/sum, torch "
        "linear/gelu/tanh/softmax/lstm."
    )
    lines.append("")
    # worst ratio per (test, group) per config
    worst: dict = collections.defaultdict(dict)
    for r in results:
        for rec in r["records"]:
            key = (_short(rec["test"]), _group(rec["name"]))
            cur = worst[key].get(r["name"])
            if cur is None or rec["ratio"] > cur["ratio"]:
                worst[key][r["name"]] = rec
    header = "| test | tensors | " + " | ".join(names) + " |"
    lines += [
        "Worst err / bound per compared-tensor group: `ratio (err / bound)`; "
        "a test passes where every ratio <= 1.",
        "",
        header,
        "|---|---|" + "---|" * len(names),
    ]
    for (test, group), per in sorted(worst.items()):
        cells = []
        for n in names:
            rec = per.get(n)
            cell = "-" if rec is None else f"{rec['ratio']:.2f} "
            cells.append(cell if rec is None else cell + f"({rec['err']:.1e} / {rec['bound']:.1e})")
        lines.append(f"| {test} | {group} | " + " | ".join(cells) + " |")
    row = [max((rec["ratio"] for rec in r["records"]), default=float("nan")) for r in results]
    lines.append("| **all** | **worst ratio** | " + " | ".join(f"**{x:.2f}**" for x in row) + " |")
    all_ratios = [
        rec["err"] / max(rec["ref32_err"], rec["floor"])
        for r in results
        for rec in r["records"]
        if rec["ref32_err"] is not None
    ]
    if all_ratios:
        lines += [
            "",
            f"Worst err / max(ref32_err, floor) over all float32 comparisons and configurations: "
            f"{max(all_ratios):.2f} ({len(all_ratios)} comparisons; FACTOR in tests/parity.py).",
        ]
    failed = [(r["name"], t) for r in results for t, o in r["outcomes"].items() if o == "failed"]
    if failed:
        lines += ["", "Failed: " + ", ".join(f"{n}: {t}" for n, t in failed)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    ap.add_argument("--tests", default=",".join(TESTS), help="comma-separated pytest node ids")
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--keep", help="keep the per-configuration reports / logs in this directory")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="with --keep: reuse the configurations that already passed there, rerun the others",
    )
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}; expected some of {sorted(CONFIGS)}")
    workdir = args.keep or tempfile.mkdtemp(prefix="isa_sweep_")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    results = []
    for n in names:
        done = os.path.join(workdir, f"{n}.json")
        if args.resume and os.path.exists(done):
            with open(done) as f:
                result = json.load(f)
            if result["rc"] == 0:
                results.append(result)
                continue
        results.append(run_config(n, args.tests.split(","), extra, workdir))
    md = table(results) + (
        f"\npytest wall time, all configurations: {sum(r['wall_s'] for r in results):.0f} s "
        f"(this invocation {time.perf_counter() - t0:.0f} s).\n"
    )
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r["rc"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
