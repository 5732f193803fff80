"""Parity of tlx (float32) with a reference implementation (HF transformers, torch), judged
against the reference in float64, with a bound that holds on any x86 CPU.

A fixed atol between two float32 implementations is tuned to one machine's rounding: a test at
`atol=1e-4` passed on Xeons and failed on an AMD EPYC (MiniLM hidden_4, 1.16e-4), because both
sides' rounding, and not only tlx's, changes with the CPU's code paths (ISA, oneDNN, BLAS). So
every parity comparison here, per compared tensor (each hidden state, logits, LSTM state
separately), is:

    err       = max |tlx32 - ref64|         tlx in float32 vs the reference in float64
    ref32_err = max |ref32 - ref64|         the reference's own float32 error, measured in the same
                                            process, on the same inputs, on the same code paths
    floor     = FLOOR_ULPS * 2**-23 * max |ref64|
    pass iff  err <= bound = FACTOR * max(ref32_err, floor)

ref64 (`model.double()`, float64 inputs) is the ground truth: its own error is ~1e-16
relative, 9 orders below anything compared here.

FACTOR = 4: two correct float32 implementations of the same math accumulate rounding of the same
order (dot products summed in another order, transcendentals within a few ulps of each other,
FMA or not), so tlx32's error is a small multiple of the reference's own; not the same multiple
everywhere, because the max over a tensor of a sum of many rounding terms fluctuates between
summation orders. Over all 498 float32 comparisons in the 6 configurations of
launch/isa_sweep.py (jax SSE4.2 / AVX / AVX2 / AVX-512 with 256- and 512-bit vectors, YNNPACK or
Eigen dots; torch ATen default / AVX2 / AVX-512, oneDNN on / off / capped, MKL's SSE2-compatible
sgemm) err / max(ref32_err, floor) is 0.79 at the median, 1.64 at the 99th percentile and 2.02
at worst, so FACTOR = 4 leaves 2x headroom over the worst case seen. Defects stay above it: one
converted weight element off by 1e-3 fails every parity test, at 2.8x (a MiniLM query-kernel
element, the subtlest) to 430x its bound; layer_norm_eps 1e-12 -> 1e-6 at 3.2x to 250x; two
swapped LSTM gates at 2e6x (launch/README.md, "isa_sweep.py", has the tables and mutations).

FLOOR_ULPS = 2: where the reference's float32 error happens to be near zero (an embedding sum, a
tensor both sides round alike; in 234 of the 498 comparisons above ref32_err < the floor), tlx
may still differ by the ulp or two of one reassociated sum or one transcendental: the bound is
then FACTOR x 2 = 8 ulps (of 2**-23 x max |ref64|; the worst err seen in that regime: 3.6).

Where tlx itself runs in float64 too (`Checker.float64`: the LSTM, under `jax.enable_x64` for
one block; tlx's attention casts its logits to float32, so the transformers cannot), the bound is
FLOAT64_ULPS = 64 float64 ulps of the tensor's magnitude (~1e-14): both sides are float64, the
worst seen is 2.5 ulps, and a defect is 9 orders of magnitude above it.

TLX_PARITY_REPORT=PATH appends one JSON line per comparison: {test (the pytest node id), name,
err, bound, ref32_err, floor, scale (= max |ref64|), ratio (= err / bound), ok}; the same line
is printed (shown with `pytest -s`). launch/isa_sweep.py tabulates these files.

TLX_TEST_TORCH_MKLDNN=0 (or 1), read when this module is imported, sets
`torch.backends.mkldnn.enabled` for the process, so the sweep can run torch without oneDNN.
tests/conftest.py loads this module once as `tlx_tests_parity` (pytest runs with
--import-mode=importlib, so tests/ is not on sys.path); test files take it from sys.modules.
"""

import json
import os

import numpy as np

FACTOR = 4.0
FLOOR_ULPS = 2
FLOAT64_ULPS = 64
EPS32 = 2.0**-23  # float32's machine epsilon: the spacing of floats in [1, 2)
EPS64 = 2.0**-52

_MKLDNN = os.environ.get("TLX_TEST_TORCH_MKLDNN")
if _MKLDNN is not None:
    import torch

    if _MKLDNN.lower() not in ("0", "1", "false", "true"):
        raise ValueError(f"TLX_TEST_TORCH_MKLDNN={_MKLDNN!r}: expected 0 or 1")
    torch.backends.mkldnn.enabled = _MKLDNN.lower() in ("1", "true")


def _node_id() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def _np64(x, where):
    x = np.asarray(x, np.float64)
    return x if where is None else x[where]


class Checker:
    """Collects comparisons, then `assert_ok()` fails naming every tensor over its bound (all of
    a test's tensors are measured and reported before it fails)."""

    def __init__(self):
        self.results: list[dict] = []

    def __call__(self, name: str, ours, ref64, ref32, where=None) -> dict:
        """ours: tlx float32; ref64 / ref32: the reference in float64 / float32 on the same
        inputs; where: an optional boolean index (e.g. the real tokens) applied to all three."""
        ours, ref64, ref32 = (_np64(x, where) for x in (ours, ref64, ref32))
        if not ours.shape == ref64.shape == ref32.shape:
            raise ValueError(f"{name}: shapes {ours.shape}, {ref64.shape}, {ref32.shape}")
        if not ref64.size:
            raise ValueError(f"{name}: nothing to compare")
        ref32_err = float(np.abs(ref32 - ref64).max())
        floor = FLOOR_ULPS * EPS32 * float(np.abs(ref64).max())
        return self._record(name, ours, ref64, ref32_err, floor, FACTOR * max(ref32_err, floor))

    def float64(self, name: str, ours, ref64, where=None) -> dict:
        """ours: tlx run in float64 as well (x64 enabled for the call); bound FLOAT64_ULPS
        float64 ulps of the tensor's magnitude. ref32_err is reported as null."""
        ours, ref64 = np.asarray(ours), np.asarray(ref64)
        if ours.dtype != np.float64 or ref64.dtype != np.float64 or ours.shape != ref64.shape:
            raise ValueError(f"{name}: {ours.dtype}{ours.shape} vs {ref64.dtype}{ref64.shape}")
        ours, ref64 = _np64(ours, where), _np64(ref64, where)
        if not ref64.size:
            raise ValueError(f"{name}: nothing to compare")
        floor = FLOAT64_ULPS * EPS64 * float(np.abs(ref64).max())
        return self._record(name, ours, ref64, None, floor, floor)

    def _record(self, name, ours, ref64, ref32_err, floor, bound) -> dict:
        scale = float(np.abs(ref64).max())
        err = float(np.abs(ours - ref64).max())  # NaN if ours has a NaN: then not ok
        result = {
            "test": _node_id(),
            "name": name,
            "err": err,
            "bound": bound,
            "ref32_err": ref32_err,
            "floor": floor,
            "scale": scale,
            "ratio": err / bound if bound > 0 else float("inf"),
            "ok": bool(err <= bound),
        }
        self.results.append(result)
        line = json.dumps(result)
        print(line)  # shown with pytest -s
        if path := os.environ.get("TLX_PARITY_REPORT"):
            with open(path, "a") as f:
                f.write(line + "\n")
        return result

    def assert_ok(self) -> None:
        bad = [r for r in self.results if not r["ok"]]
        assert not bad, "tlx float32 error vs the float64 reference above its bound: " + ", ".join(
            f"{r['name']}: err {r['err']:.3g} > bound {r['bound']:.3g} "
            f"(reference float32 err {r['ref32_err']}, floor {r['floor']:.3g})"
            for r in bad
        )
