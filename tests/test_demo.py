"""The README's demo end to end, shrunk: pretrain -> finetune from it and from scratch -> table.

It runs as on a fresh machine: no TLX_DATA_DIR, so the demo fetches what it reads from a
loopback server standing in for the datasets' public hosts (built from the shared data root).
"""

import json
import os
import pathlib
import subprocess
import sys

from tlx.data import fetch

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_demo_fetches_its_data_then_runs_and_prints_the_table(tmp_path, data_dir, loopback):
    manifest = fetch.load_manifest()
    served = loopback.upstream_files(manifest, data_dir)
    synthetic = tmp_path / "manifest.json"  # rebuilt archives: their own sha256
    synthetic.write_text(json.dumps(loopback.synthetic_manifest(manifest, served)))
    env = {k: v for k, v in os.environ.items() if k != "TLX_DATA_DIR"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", TLX_CACHE_DIR=str(tmp_path / "cache"),
               TLX_DATA_MANIFEST=str(synthetic))  # fmt: skip
    workdir = tmp_path / "runs"
    cmd = [sys.executable, "launch/demo.py", f"--workdir={workdir}", "--size=tiny",
           "--vocab=bert_uncased", "--pretrain_steps=2", "--finetune_steps=2"]  # fmt: skip
    with loopback.Server(served) as srv:
        env["TLX_DATA_BASE_URL"] = srv.url
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TLX_DATA_DIR is not set" in proc.stderr and "sst2: fetching 4 of 4" in proc.stderr
    fetched = tmp_path / "cache" / "data"
    needed = [
        "wikitext2",
        "gutenberg",
        "inaugural",
        "state_union",
        "sst2",
        "minilm_l6_bert_uncased",
    ]
    assert fetch.missing_files(manifest, needed, fetched) == []
    assert not (fetched / "tagging").exists()  # only what the demo reads
    assert "SST-2 dev accuracy %, pretrained" in proc.stdout
    assert "initialised from" in proc.stdout  # the pretrained run really loaded the checkpoint
    summary = json.loads((workdir / "summary.json").read_text())
    assert 0.0 <= float(summary["pretraining eval MLM accuracy"]) <= 1.0
    assert 0.0 <= float(summary["SST-2 dev accuracy %, from scratch"]) <= 100.0
    # The runs record accuracy as a fraction; the table shows it x 100, in percent.
    for run, row in (("sst2_pretrained", "pretrained"), ("sst2_scratch", "from scratch")):
        final = json.loads((workdir / run / "final_metrics.json").read_text())
        assert 0.0 <= final["eval/accuracy"] <= 1.0, final
        assert summary[f"SST-2 dev accuracy %, {row}"] == f"{100 * final['eval/accuracy']:.1f}"
    for run in ("pretrain", "sst2_pretrained", "sst2_scratch"):
        assert (workdir / run / "metrics.jsonl").exists(), run
