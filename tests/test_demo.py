"""The README's demo end to end, shrunk: pretrain -> finetune from it and from scratch -> table."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_demo_runs_and_prints_the_table(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    cmd = [sys.executable, "-m", "tlx.demo", f"--workdir={tmp_path}", "--size=tiny",
           "--vocab=bert_uncased", "--pretrain_steps=2", "--finetune_steps=2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SST-2 dev accuracy %, pretrained" in proc.stdout
    assert "initialised from" in proc.stdout  # the pretrained run really loaded the checkpoint
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= float(summary["pretraining eval MLM accuracy"]) <= 1.0
    assert 0.0 <= float(summary["SST-2 dev accuracy %, from scratch"]) <= 100.0
    for run in ("pretrain", "sst2_pretrained", "sst2_scratch"):
        assert (tmp_path / run / "metrics.jsonl").exists(), run
