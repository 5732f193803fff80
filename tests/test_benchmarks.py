"""The benchmark scripts' tlx measurements run: one step of each at the smallest shapes (the
numbers themselves are measured by hand, `launch/README.md`; a broken script is caught here)."""

import pathlib
import sys

import numpy as np

_LAUNCH = str(pathlib.Path(__file__).resolve().parents[1] / "launch")


def _import(name):
    if _LAUNCH not in sys.path:  # the scripts import bench_common as a sibling
        sys.path.insert(0, _LAUNCH)
    return __import__(name)


def test_benchmark_bert_times_a_tlx_step():
    bert = _import("benchmark_bert")
    batch = bert.synthetic_batch(8, 32)  # divides the 8 test devices (mesh data=-1)
    times = bert.bench_tlx("tiny", batch, False, warmup=0, steps=2)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_benchmark_gpt_times_a_tlx_step():
    gpt = _import("benchmark_gpt")
    ids = np.random.default_rng(0).integers(0, 50257, (1, 16)).astype(np.int32)
    result = gpt.bench_tlx("mini", ids, True, "float32", 8, warmup=0, steps=1)
    assert len(result["times_s"]) == 1 and result["xent_chunk"] == 8
